"""`spawn launch`: flags here; the work in ``controller.launch.execute`` (imported when it runs)."""

from __future__ import annotations

import argparse
from typing import Any

from controller.output import Output, add_json_flag


def _run(args: argparse.Namespace, out: Output) -> int:
    from controller.launch import execute

    return execute.run(args, out)


def register(subparsers: Any) -> None:
    from controller import iam
    from controller.launch import launch_flags

    parser = subparsers.add_parser(
        "launch", help="launch instances that install the spored agent first",
        description="Launch EC2 instances tagged for spored, with a least-privilege role. "
                    "Every flag is validated before any AWS write; --dry-run prints the whole plan. "
                    "Flags not given come from the environment, then the defaults file "
                    "(`spawn defaults path`), then the built-in defaults.")
    launch_flags.add_arguments(parser)
    iam.add_iam_arguments(parser)
    add_json_flag(parser)
    parser.set_defaults(func=_run)
