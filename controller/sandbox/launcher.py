"""The sandbox launches through `spawn launch` itself: the same parser, the same ``execute.run``.

``launch_argv`` builds the arguments a person would type; they are parsed by the real `spawn`
parser and run by the same function the launch command runs, with an ``Output`` that hands the
launch's progress, warnings and result to the sandbox instead of printing them.
Afterwards ``stored_launch`` reads back from the (local) cloud what launch stored: the role it
composed and the user-data it rendered (which the sandbox does not execute).
"""

from __future__ import annotations

import argparse
import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from controller.output import Relay
from spored.contract import format_duration
from spored.errors import SpawnError

DEFAULT_INSTANCE_TYPE = "t3.micro"
SANDBOX_NAME = "spawn-sandbox"
# Destinations of the IAM flags (shared with `spawn launch` through add_iam_arguments).
_IAM_DESTS = ("iam_policy", "iam_policy_file", "iam_managed_policies", "iam_role",
              "iam_permissions_boundary", "force")


SANDBOX_SSH_FROM = "127.0.0.1/32"


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """The launch flags the sandbox passes through: instance type and every IAM flag."""
    from controller import iam

    parser.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE,
                        help=f"instance type to launch (default {DEFAULT_INSTANCE_TYPE})")
    iam.add_iam_arguments(parser)


def launch_argv(*, instance_type: str, ttl: timedelta | None, idle_timeout: timedelta | None,
                spot: bool, agent_bundle: str) -> list[str]:
    """`spawn launch ...` for the sandbox instance. The agent runs only once launch returns, so
    launch does not wait for it (--no-wait)."""
    argv = ["launch", "--instance-type", instance_type, "--name", SANDBOX_NAME,
            "--agent-bundle", agent_bundle, "--no-wait", "--json",
            # the local cloud's instance is reached from here or not at all; and the sandbox never
            # asks the internet for this machine's address (a key in ~/.ssh would make launch ask)
            "--ssh-from", SANDBOX_SSH_FROM]
    if ttl is not None:
        argv += ["--ttl", format_duration(ttl)]
    if idle_timeout is not None:
        argv += ["--idle-timeout", format_duration(idle_timeout)]
    if spot:
        argv.append("--spot")
    return argv


def run_launch(argv: list[str], sandbox_args: argparse.Namespace,
               on_step: Callable[[str, str], None], on_warning: Callable[[str], None]) -> dict[str, Any]:
    """Parse ``argv`` with the real `spawn` parser, add the sandbox's IAM flags, run launch."""
    from controller.cli import build_parser

    args = build_parser().parse_args(argv)
    args.use_defaults_file = False  # the sandbox's launch is the same everywhere
    for dest in _IAM_DESTS:
        if hasattr(sandbox_args, dest):
            setattr(args, dest, getattr(sandbox_args, dest))
    out = Relay(on_warning=on_warning, on_step=on_step)
    code = int(args.func(args, out))
    if code != 0 or not out.results:
        raise SpawnError(f"spawn launch ended with exit code {code} and no result")
    return out.results[-1]


@dataclass(frozen=True)
class StoredLaunch:
    """What launch left in the cloud for the instance."""

    role_name: str | None
    inline_policies: dict[str, Any]
    managed_policies: list[str]
    user_data_bytes: int
    bundle_url: str
    bundle_sha256: str
    config_toml: str
    part_names: list[str]


_ASSIGN = re.compile(r"^(BUNDLE_URL_B64|BUNDLE_SHA256|CONFIG_B64)='([^']*)'$", re.MULTILINE)


def stored_launch(instance_id: str, region: str) -> StoredLaunch:
    """Read the instance's role (with its policies) and user-data back from the cloud."""
    from controller import aws
    from controller.launch import userdata

    ec2 = aws.client("ec2", region)
    iam = aws.client("iam", region)
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    role_name: str | None = None
    inline: dict[str, Any] = {}
    managed: list[str] = []
    profile_arn = (instance.get("IamInstanceProfile") or {}).get("Arn")
    if profile_arn:
        profile = iam.get_instance_profile(InstanceProfileName=profile_arn.rsplit("/", 1)[1])
        roles = profile["InstanceProfile"]["Roles"]
        if roles:
            role_name = str(roles[0]["RoleName"])
            for name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
                doc = iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
                inline[name] = json.loads(doc) if isinstance(doc, str) else doc
            managed = [p["PolicyArn"] for p in
                       iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]]
    attr = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    raw = base64.b64decode(attr.get("UserData", {}).get("Value", ""))
    parts = userdata.parts(raw)
    install = next((body for _t, name, body in parts if name == userdata.INSTALL_PART_NAME), b"")
    values = dict(_ASSIGN.findall(install.decode("utf-8", errors="replace")))
    if set(values) != {"BUNDLE_URL_B64", "BUNDLE_SHA256", "CONFIG_B64"}:
        raise SpawnError(f"the user-data stored with {instance_id} has no agent install part "
                         f"({userdata.INSTALL_PART_NAME}) with the bundle and configuration")
    return StoredLaunch(
        role_name=role_name, inline_policies=inline, managed_policies=managed,
        user_data_bytes=len(raw),
        bundle_url=base64.b64decode(values["BUNDLE_URL_B64"]).decode(),
        bundle_sha256=values["BUNDLE_SHA256"],
        config_toml=base64.b64decode(values["CONFIG_B64"]).decode(),
        part_names=[str(name) for _t, name, _b in parts],
    )


def fetch_sha256(url: str) -> str:
    """What an instance would do with the bundle URL: download it and hash it."""
    import hashlib

    import requests

    digest = hashlib.sha256()
    with requests.get(url, stream=True, timeout=(5, 30)) as resp:
        resp.raise_for_status()
        for chunk in resp.iter_content(1 << 16):
            digest.update(chunk)
    return digest.hexdigest()
