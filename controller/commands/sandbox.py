"""`spawn sandbox`: the whole lifecycle against a local cloud, with no AWS account."""

from __future__ import annotations

import argparse
from typing import Any

from controller.output import Output, add_json_flag

DESCRIPTION = """\
Runs the real product against a local cloud on loopback: a moto server and an IMDS emulator in
this process, the instance role and the instance created by the same code as `spawn launch`, and
the real agent (`spored run`) as a separate process that gets its credentials from the emulator,
as on EC2. Shows the lifecycle live: launched, agent ready, countdown, warnings, the agent's
terminate call, the instance terminated. No AWS account, no root, no network.

The agent here never touches this machine: no power-off backstop, no wall to logged-in users
unless --wall, and it runs as you. Needs the optional extra: pip install 'spawn-spored[sandbox]'.
"""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sandbox", help="the whole lifecycle against a local cloud (no AWS account needed)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ttl", default="20s", metavar="DURATION",
                        help="time to live of the sandbox instance (default 20s)")
    parser.add_argument("--idle-timeout", metavar="DURATION",
                        help="idle timeout; the agent measures this machine's activity")
    parser.add_argument("--spot-interruption-after", metavar="DURATION",
                        help="after DURATION the emulator serves a spot interruption notice")
    parser.add_argument("--complete-after", metavar="DURATION",
                        help="after DURATION run `spored complete` against the agent's marker")
    parser.add_argument("--wall", action="store_true",
                        help="let the agent wall logged-in users of this machine (off by default)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the local cloud up until Ctrl-C and print the environment that "
                             "lets `spawn list/extend/terminate` act on it from another terminal")
    parser.add_argument("--timeout", metavar="DURATION",
                        help="give up when the instance is not ended by then (default: the planned "
                             "end plus 60s)")
    from controller.sandbox.launcher import add_launch_arguments

    add_launch_arguments(parser)
    add_json_flag(parser, help="one JSON event per line on stdout (stable `event` field)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, out: Output) -> int:
    from controller.sandbox.run import run_sandbox

    return run_sandbox(args, out)
