"""`spawn completion bash|zsh|fish`: a shell completion script, generated from the parser (shtab)."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from controller.output import Output, add_json_flag

SHELLS = ("bash", "zsh", "fish")
EPILOG = """examples:
  spawn completion bash > ~/.local/share/bash-completion/completions/spawn
  spawn completion zsh > "${fpath[1]}/_spawn"
  spawn completion fish > ~/.config/fish/completions/spawn.fish
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "completion", help="print a shell completion script (bash, zsh or fish)",
        description="Print a completion script for spawn's commands and flags, generated from "
                    "this version's own parser. Install it where your shell looks (see examples).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shell", choices=SHELLS, help="the shell: " + ", ".join(SHELLS))
    add_json_flag(parser)
    parser.set_defaults(func=run)


def script(shell: str) -> str:
    import shtab

    from controller.cli import build_parser

    return str(shtab.complete(build_parser(), shell=shell))


def run(args: argparse.Namespace, out: Output) -> int:
    text = script(args.shell)

    def human(stream: TextIO) -> None:
        stream.write(text if text.endswith("\n") else text + "\n")

    out.result({"shell": args.shell, "script": text}, human)
    return 0
