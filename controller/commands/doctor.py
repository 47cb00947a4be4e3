"""`spawn doctor`: check, before anything costs money, that a launch would work; say how to fix what
would not. The checks are in ``controller.doctor.checks`` (imported when the command runs)."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path
from typing import Any

from controller.output import Output, add_json_flag
from spored.errors import ValidationError

EXAMPLES = """\
examples:
  spawn doctor
  spawn doctor --region eu-west-1 --instance-type t4g.small --ssh-from 203.0.113.7/32
  spawn doctor --json | jq '.checks[] | select(.status != "ok")'
"""


def _inputs(args: argparse.Namespace) -> Any:
    """Doctor's flags, completed from the defaults file as `spawn launch` completes its own
    (flags > environment > ~/.config/spawn/config.toml > built-in); exit 2 on a bad value."""
    from controller import defaults
    from controller.doctor.checks import Inputs
    from controller.launch import launch_flags

    sources = defaults.apply(args)
    region_source = f"the defaults file {defaults.path()}" if sources.get("region") == "file" else "--region"

    def match(value: str | None, regex: Any, flag: str, form: str) -> str | None:
        if value is not None and not regex.match(value):
            raise ValidationError(flag, f"{value!r} is not valid; accepted: {form}")
        return value

    ssh_from = []
    for cidr in args.ssh_from:
        try:
            ssh_from.append(str(ipaddress.ip_network(cidr.strip(), strict=True)))
        except ValueError as exc:
            raise ValidationError("--ssh-from", f"{cidr!r} is not a CIDR ({exc}); accepted: "
                                  "e.g. 203.0.113.7/32 or 2001:db8::/64") from None
    if args.key_name and args.ssh_key:
        raise ValidationError("--ssh-key", "give either --key-name or --ssh-key, not both")
    return Inputs(
        region=match(args.region, launch_flags.REGION_RE, "--region", "a region name, e.g. us-east-1"),
        region_source=region_source,
        instance_type=match(args.instance_type, launch_flags.INSTANCE_TYPE_RE, "--instance-type",
                            "family.size, e.g. t3.micro"),
        subnet=match(args.subnet, launch_flags.SUBNET_RE, "--subnet",
                     "subnet- followed by 8 or 17 hex digits"),
        key_name=match(args.key_name, launch_flags.KEY_NAME_RE, "--key-name",
                       "1-255 printable ASCII characters"),
        ssh_key=args.ssh_key, ssh_from=tuple(ssh_from), agent_bundle=args.agent_bundle or None,
        home=Path.home())


def _run(args: argparse.Namespace, out: Output) -> int:
    from controller.doctor import checks, report

    inputs = _inputs(args)  # bad flags: exit 2 before any AWS call

    def show(check: report.Check) -> None:
        if not out.json:
            out.stdout.write(report.lines([check], name_width=report.NAME_WIDTH)[0] + "\n")
            out.stdout.flush()

    results = checks.run_all(inputs, on_check=show)
    if out.json:
        out.result(report.to_json(results))
    else:
        out.info(report.summary(results))
    return int(report.exit_status(results))


def register(subparsers: Any) -> None:
    import os

    parser = subparsers.add_parser(
        "doctor", help="check credentials, region, network, AMI, permissions and SSH before a launch",
        description="Check, with reads and EC2 DryRun calls only, that `spawn launch` would work "
                    "here, and say how to fix what would not. One line per check: ok, warn, FAIL "
                    "or 'could not check'. Exits 5 when a check that would block a launch fails. "
                    "Flags not given come from the environment, then the defaults file "
                    "(`spawn defaults path`), as for `spawn launch`.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--region", help="AWS region (default: the AWS config's, as launch)")
    parser.add_argument("--instance-type", "-t", help="check the AMI for this type's architecture "
                        "(default: x86_64 and arm64)")
    parser.add_argument("--subnet", help="the subnet you pass to launch (default: the default VPC's)")
    parser.add_argument("--key-name", help="the EC2 key pair you pass to launch")
    parser.add_argument("--ssh-key", metavar="PATH", help="the public key you pass to launch "
                        "(default: ~/.ssh/id_ed25519.pub, then id_rsa.pub)")
    parser.add_argument("--ssh-from", action="append", default=[], metavar="CIDR",
                        help="the --ssh-from you pass to launch (repeatable)")
    parser.add_argument("--agent-bundle", default=os.environ.get("SPAWN_AGENT_BUNDLE"),
                        metavar="PATH|URL", help="the --agent-bundle you pass to launch "
                        "(env SPAWN_AGENT_BUNDLE)")
    add_json_flag(parser)
    parser.set_defaults(func=_run)
