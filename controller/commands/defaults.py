"""`spawn defaults`: the defaults file for `spawn launch` (not `spawn config`, which is instance tags)."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from controller.output import Output, add_json_flag

DESCRIPTION = """\
Your own defaults for `spawn launch`, in $XDG_CONFIG_HOME/spawn/config.toml (default
~/.config/spawn/config.toml): region, ssh-key, ssh-from, ttl, idle-timeout, iam-policy and
agent-bundle. A flag wins over the environment, which wins over this file, which wins over the
built-in default. The file is checked like the flags: an unknown key or a bad value exits 2.
Not to be confused with `spawn config`, which reads and writes an instance's lifecycle tags.
"""

FILE_EXAMPLE = """\
example file:
  region = "eu-west-1"
  ttl = "4h"
  idle-timeout = "30m"
  ssh-from = ["203.0.113.7/32"]
  iam-policy = ["s3:ReadOnly@my-bucket"]
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "defaults", help="your launch defaults file: where it is and what it sets",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  spawn defaults\n  spawn defaults path\n  spawn defaults show --json\n\n"
               + FILE_EXAMPLE)
    add_json_flag(parser)
    parser.set_defaults(func=cmd_show)
    sub = parser.add_subparsers(dest="defaults_command", metavar="SUBCOMMAND")
    p = sub.add_parser("show", help="check the file and show each default and where it comes from",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  spawn defaults show\n  spawn defaults show --json\n")
    add_json_flag(p)
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("path", help="print where the defaults file is (whether or not it exists)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  spawn defaults path\n  \"$EDITOR\" \"$(spawn defaults path)\"\n")
    add_json_flag(p)
    p.set_defaults(func=cmd_path)


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    from controller import defaults

    info = defaults.show()

    def human(stream: TextIO) -> None:
        stream.write(f"{info['path']}{'' if info['exists'] else ' (no such file: built-in defaults)'}\n")
        for name, entry in info["keys"].items():
            value = entry["value"]
            shown = ", ".join(value) if isinstance(value, list) else (value or "-")
            stream.write(f"  {name:<13} {shown:<32} ({entry['source']}; flag {entry['flag']})\n")

    out.result(info, human)
    return 0


def cmd_path(args: argparse.Namespace, out: Output) -> int:
    from controller import defaults

    file = defaults.path()

    def human(stream: TextIO) -> None:
        stream.write(f"{file}\n")

    out.result({"path": str(file), "exists": file.is_file()}, human)
    return 0
