"""`spawn selftest`: prove the whole chain in your own AWS account with one short-lived instance."""

from __future__ import annotations

import argparse
from typing import Any

from controller.output import Output

DESCRIPTION = """\
Launches one small instance with your usual settings and a 3-minute TTL, through the same code as
`spawn launch`, and follows the whole chain live: role composed and linted, instance running,
failsafe armed, agent installed and ready, a DryRun proof that the instance may end and tag
itself but not a second instance launched for the purpose, the status visible here, the
warning, the agent's own TerminateInstances at the deadline, and `terminated`.

Everything it creates is tagged and removed at the end, on failure, on Ctrl-C and when the run
reaches its bound of 10 minutes (the role and profile are kept only with --keep-role). The
budget is printed before anything starts. Cost: two nano instances for at most 10 minutes.
"""

EPILOG = """\
examples:
  spawn selftest --dry-run              what it would launch and check; creates nothing
  spawn selftest                        t4g.nano in your default region, ~5 minutes
  spawn selftest --region eu-west-1 --instance-type t3.nano --json

exit codes: 0 every stage passed; 6 a stage failed (its fix is printed); 2 bad input
(nothing created); 130 interrupted (after cleaning up).
"""


def register(subparsers: Any) -> None:
    from controller import iam
    from controller.selftest.stages import INSTANCE_TYPES

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "selftest", help="prove the whole chain in your AWS account (one nano instance, ~5 min)",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--region", help="AWS region (default: the AWS config's)")
    parser.add_argument("--instance-type", default=INSTANCE_TYPES[0],
                        help=f"{' | '.join(INSTANCE_TYPES)} (default {INSTANCE_TYPES[0]})")
    parser.add_argument("--ttl", metavar="DURATION",
                        help="the instance's TTL (default 3m; 2m-5m on AWS)")
    parser.add_argument("--keep-role", action="store_true",
                        help="keep the IAM role and instance profile this run created")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the budget, the launch and the stages; create nothing")
    parser.add_argument("--local-agent", action="store_true",
                        help="against a local cloud only (AWS_ENDPOINT_URL on loopback): run the "
                             "sandbox's agent on this machine, since the local cloud runs no user-data")
    iam.add_iam_arguments(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, out: Output) -> int:
    from controller.selftest.run import run as run_selftest

    return run_selftest(args, out)
