"""`spawn` entry point: builds the parser, runs one command, maps every error to an exit code.

Command modules live in ``controller.commands``; each exposes ``register(subparsers)`` and sets
``func`` on its parser to a callable ``(args, out) -> int``. Nothing here imports boto3, so
``spawn --help`` stays fast; commands import AWS code when they run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from controller import __version__
from controller.output import Output
from spored.argparsing import Parser
from spored.errors import SpawnError, exit_code_for
from spored.exit_codes import EXIT_DESCRIPTIONS, ExitStatus, help_epilog

COMMAND_MODULES = (
    "controller.commands.doctor",
    "controller.commands.launch",
    "controller.commands.lifecycle",
    "controller.commands.iam",
    "controller.commands.sandbox",
    "controller.commands.selftest",
    "controller.commands.bundle",
    "controller.commands.defaults",
    "controller.commands.completion",
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="spawn",
        description="Launch disposable EC2 instances that clean up after themselves.",
        epilog=help_epilog(EXIT_DESCRIPTIONS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"spawn {__version__}")
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error"], help="log level on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    from controller.cli_help import add_examples

    add_examples(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None) or not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return ExitStatus.USAGE
    from spored import logs  # structlog costs ~0.15 s to import: not on the --help path

    logs.configure(json=bool(getattr(args, "json", False)), level=args.log_level)
    out = Output(json=bool(getattr(args, "json", False)))
    try:
        return int(args.func(args, out))
    except SpawnError as exc:
        out.error(exc)
        return int(exc.exit_status)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return ExitStatus.INTERRUPTED
    except Exception as exc:  # the one place foreign exceptions become an exit status
        translated = _translate_foreign(exc)
        if translated is None:
            raise
        out.error(translated)
        return int(exit_code_for(translated))


def _translate_foreign(exc: Exception) -> SpawnError | None:
    module = type(exc).__module__
    if module.startswith(("botocore", "boto3")):
        from spored.errors import from_aws

        return from_aws(exc, action="AWS call")
    return None


if __name__ == "__main__":
    sys.exit(main())
