"""`spawn launch` flags: the argparse definitions and their validation.

``validate(args)`` turns parsed arguments into a ``LaunchFlags`` or raises ValidationError naming
the flag and the accepted form. It reads local files (the SSH public key, --user-data, a local
agent bundle's size) but never calls AWS: every bad input is refused before any AWS write.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from spored.contract import (
    DURATION_FORM,
    Action,
    parse_action,
    parse_duration,
)
from spored.errors import ValidationError

DEFAULT_IDLE_TIMEOUT = timedelta(hours=1)
DEFAULT_AGENT_WAIT = timedelta(minutes=3)
EVERYONE = ("0.0.0.0/0", "::/0")
MAX_COUNT = 50

INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
REGION_RE = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d{1,2}$")
AMI_RE = re.compile(r"^ami-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
SUBNET_RE = re.compile(r"^subnet-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
SG_RE = re.compile(r"^sg-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
KEY_NAME_RE = re.compile(r"^[\x20-\x7e]{1,255}$")
# EC2 tag values: letters, digits, spaces and _ . : / = + - @ (we also refuse leading/trailing space).
NAME_RE = re.compile(r"^[\w.:/=+\-@](?:[\w .:/=+\-@]{0,254}[\w.:/=+\-@])?$")
CLIENT_TOKEN_RE = re.compile(r"^[\x21-\x7e]{1,64}$")
URL_RE = re.compile(r"^https://[A-Za-z0-9.\-]+(?::\d{1,5})?(?:/[A-Za-z0-9._~%/+=\-]*)?"
                    r"(?:\?[A-Za-z0-9._~%&=+/\-]*)?$")


@dataclass(frozen=True)
class LaunchFlags:
    """Validated `spawn launch` input. Plain data; nothing here has touched AWS."""

    instance_type: str
    region: str | None = None
    ami: str | None = None
    name: str | None = None
    count: int = 1
    ttl: timedelta | None = None
    idle_timeout: timedelta | None = None
    on_complete: Action = Action.TERMINATE
    spot: bool = False
    spot_max_price: str | None = None
    hibernate: bool = False
    key_name: str | None = None
    ssh_public_key: str | None = None  # OpenSSH public key text, from --ssh-key or ~/.ssh
    ssh_key_path: str | None = None
    ssh_from: tuple[str, ...] = ()
    # No --ssh-from but a key to connect with: SSH from the caller's own public address, looked up
    # by the launch (controller.launch.checkip) before anything is created.
    ssh_from_lookup: bool = False
    subnet: str | None = None
    security_groups: tuple[str, ...] = ()
    user_data: bytes | None = None
    imds_hop_limit: int = 1
    agent_bundle: str | None = None
    client_token: str = field(default_factory=lambda: f"spawn-{uuid.uuid4()}")
    dry_run: bool = False
    wait_agent: timedelta = DEFAULT_AGENT_WAIT
    no_wait: bool = False
    timeout_defaulted: bool = False

    @property
    def hibernation_configured(self) -> bool:
        return self.hibernate or self.on_complete is Action.HIBERNATE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The launch flags other than IAM's (those come from ``controller.iam.add_iam_arguments``)."""
    g = parser.add_argument_group("instance")
    g.add_argument("--instance-type", "-t", required=True, help="EC2 instance type, e.g. t3.micro")
    g.add_argument("--region", help="AWS region (default: the AWS config's)")
    g.add_argument("--ami", help="AMI id (default: Amazon Linux 2023 for the type's architecture; "
                   "the NVIDIA GPU AMI for GPU types)")
    g.add_argument("--name", help="Name tag")
    g.add_argument("--count", default="1", help=f"instances to launch in one call (1-{MAX_COUNT})")
    g.add_argument("--subnet", help="subnet id (default: the default VPC's)")
    g.add_argument("--security-group", action="append", default=[], metavar="SG_ID",
                   help="use this security group instead of spawn's SSH group (repeatable)")
    g.add_argument("--user-data", metavar="FILE",
                   help="your own script or #cloud-config; runs after the agent is installed")
    g.add_argument("--imds-hop-limit", default="1",
                   help="IMDSv2 response hop limit (1 by default; 2 for containers)")
    g.add_argument("--client-token", help="idempotency token: re-running a launch with the same "
                   "token never launches twice (default: a fresh one per run)")
    lc = parser.add_argument_group("lifecycle")
    lc.add_argument("--ttl", help=f"time to live ({DURATION_FORM})")
    lc.add_argument("--idle-timeout", help="end the instance after this long idle")
    lc.add_argument("--on-complete", default="terminate",
                    help="terminate | stop | hibernate (at TTL, on completion and idle)")
    lc.add_argument("--no-timeout", action="store_true",
                    help="explicitly allow no TTL and no idle timeout (default: idle timeout 1h)")
    lc.add_argument("--spot", action="store_true", help="one-time spot instance (terminates)")
    lc.add_argument("--spot-max-price", metavar="USD", help="maximum hourly spot price")
    lc.add_argument("--hibernate", action="store_true",
                    help="enable hibernation (the type must support it; the root volume is encrypted)")
    ssh = parser.add_argument_group("ssh")
    ssh.add_argument("--key-name", help="an existing EC2 key pair")
    ssh.add_argument("--ssh-key", metavar="PATH",
                     help="public key to import (default: ~/.ssh/id_ed25519.pub, then id_rsa.pub)")
    ssh.add_argument("--ssh-from", action="append", default=[], metavar="CIDR",
                     help="allow SSH from this CIDR (repeatable; default: your own public IPv4 "
                     "address/32, looked up at https://checkip.amazonaws.com or $SPAWN_CHECKIP_URL; "
                     "0.0.0.0/0 opens SSH to everyone, only when given here, with a warning)")
    ag = parser.add_argument_group("agent")
    ag.add_argument("--agent-bundle", default=os.environ.get("SPAWN_AGENT_BUNDLE"),
                    metavar="PATH|URL", help="spored bundle tarball: a local file (uploaded to a "
                    "private S3 bucket in your account) or an https URL; plain http is refused "
                    "(env SPAWN_AGENT_BUNDLE)")
    ag.add_argument("--agent-wait", default="3m",
                    help="how long to wait for the agent to report (default 3m)")
    ag.add_argument("--no-wait", action="store_true",
                    help="return once the instances run; don't wait for the agent")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the full plan and make no AWS writes")


def _int(value: str, flag: str, low: int, high: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValidationError(flag, f"{value!r} is not an integer; accepted: {low}-{high}") from None
    if not low <= number <= high:
        raise ValidationError(flag, f"{number} is out of range; accepted: {low}-{high}")
    return number


def _match(value: str | None, regex: re.Pattern[str], flag: str, form: str) -> str | None:
    if value is None:
        return None
    if not regex.match(value):
        raise ValidationError(flag, f"{value!r} is not valid; accepted: {form}")
    return value


def _cidr(value: str) -> str:
    try:
        net = ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise ValidationError("--ssh-from", f"{value!r} is not a CIDR ({exc}); accepted: "
                              "e.g. 203.0.113.7/32 or 2001:db8::/64") from None
    return str(net)


def read_public_key(path: Path) -> str:
    """An OpenSSH public key (``ssh-ed25519``/``ssh-rsa``/``ecdsa-...``) from ``path`` or ``path.pub``."""
    candidate = path if path.suffix == ".pub" or not path.with_suffix(path.suffix + ".pub").exists() \
        else path.with_suffix(path.suffix + ".pub")
    try:
        text = candidate.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError("--ssh-key", f"cannot read {str(candidate)!r}: {exc}") from None
    parts = text.split()
    if len(parts) < 2 or parts[0] not in {"ssh-ed25519", "ssh-rsa"}:
        raise ValidationError("--ssh-key", f"{str(candidate)!r} is not an OpenSSH public key; "
                              "accepted: a .pub file starting with ssh-ed25519 (preferred) or ssh-rsa")
    return " ".join(parts[:2])


def default_public_key(home: Path) -> tuple[str, str] | None:
    for name in ("id_ed25519.pub", "id_rsa.pub"):
        path = home / ".ssh" / name
        if path.is_file():
            return str(path), read_public_key(path)
    return None


def _user_data(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValidationError("--user-data", f"cannot read {path!r}: {exc.strerror}") from None
    if not data.strip():
        raise ValidationError("--user-data", f"{path!r} is empty")
    from controller.launch.userdata import user_data_type

    user_data_type(data)  # refuses what cloud-init would ignore
    return data


def _agent_bundle(value: str | None) -> str | None:
    """A local file (uploaded to the account's own bucket) or an https URL. Never plain http: the
    bundle is code that runs as root with the instance's role, and anyone on the network path
    could replace it (the controller would hash the replaced file and the instance would trust it)."""
    if value is None or value == "":
        return None
    if value[:7].lower() == "http://":
        raise ValidationError("--agent-bundle", f"{value!r}: plain http is refused (anyone on the "
                              "network path could replace the agent); accepted: a local file "
                              "(uploaded to a private S3 bucket in your account) or an https:// URL")
    if value[:8].lower() == "https://":
        if not URL_RE.match(value):
            raise ValidationError("--agent-bundle", f"{value!r} is not an accepted URL; accepted: "
                                  "https://host[:port]/path with letters, digits and ._~%/+=- only")
        return value
    if "://" in value:
        raise ValidationError("--agent-bundle", f"{value!r}: accepted: a local file or an https URL")
    path = Path(value)
    if not path.is_file():
        raise ValidationError("--agent-bundle", f"{value!r} is not a file; accepted: a local "
                              "spored-bundle-*.tar.gz or an https URL")
    return str(path.resolve())


def _price(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        price = Decimal(value)
    except InvalidOperation:
        price = Decimal(-1)
    if not price.is_finite() or price <= 0 or price > 1000:
        raise ValidationError("--spot-max-price", f"{value!r} is not a price; accepted: USD per hour, "
                              "e.g. 0.05")
    return format(price, "f")


def validate(args: argparse.Namespace, *, home: Path | None = None) -> LaunchFlags:
    """All of `spawn launch`'s own flags, checked; raises ValidationError before any AWS call."""
    instance_type = str(_match(args.instance_type.strip(), INSTANCE_TYPE_RE, "--instance-type",
                               "family.size, e.g. t3.micro"))
    region = _match(args.region, REGION_RE, "--region", "a region name, e.g. us-east-1")
    ami = _match(args.ami, AMI_RE, "--ami", "ami- followed by 8 or 17 hex digits")
    name = _match(args.name, NAME_RE, "--name",
                  "1-256 letters, digits, spaces and _ . : / = + - @")
    count = _int(args.count, "--count", 1, MAX_COUNT)
    hop = _int(args.imds_hop_limit, "--imds-hop-limit", 1, 64)
    subnet = _match(args.subnet, SUBNET_RE, "--subnet", "subnet- followed by 8 or 17 hex digits")
    sgs = tuple(str(_match(sg, SG_RE, "--security-group", "sg- followed by 8 or 17 hex digits"))
                for sg in args.security_group)
    token = _match(args.client_token, CLIENT_TOKEN_RE, "--client-token",
                   "1-64 printable ASCII characters, no spaces")
    key_name = _match(args.key_name, KEY_NAME_RE, "--key-name", "1-255 printable ASCII characters")

    ttl = parse_duration(args.ttl, field="--ttl") if args.ttl is not None else None
    idle = parse_duration(args.idle_timeout, field="--idle-timeout") \
        if args.idle_timeout is not None else None
    if args.no_timeout and (ttl or idle):
        raise ValidationError("--no-timeout", "cannot be combined with --ttl or --idle-timeout")
    timeout_defaulted = False
    if not args.no_timeout and ttl is None and idle is None:
        idle, timeout_defaulted = DEFAULT_IDLE_TIMEOUT, True
    on_complete = parse_action(args.on_complete, field="--on-complete")
    if args.spot and on_complete is not Action.TERMINATE:
        raise ValidationError("--on-complete", f"{on_complete.value!r} with --spot: one-time spot "
                              "instances cannot be stopped or hibernated; accepted with --spot: terminate")
    if args.spot and args.hibernate:
        raise ValidationError("--hibernate", "cannot be combined with --spot (one-time spot instances "
                              "only terminate)")
    if args.spot_max_price is not None and not args.spot:
        raise ValidationError("--spot-max-price", "only with --spot")
    price = _price(args.spot_max_price)

    if key_name and args.ssh_key:
        raise ValidationError("--ssh-key", "give either --key-name or --ssh-key, not both")
    ssh_public_key = ssh_key_path = None
    if args.ssh_key:
        ssh_key_path, ssh_public_key = args.ssh_key, read_public_key(Path(args.ssh_key).expanduser())
    elif not key_name:
        found = default_public_key(home if home is not None else Path.home())
        if found:
            ssh_key_path, ssh_public_key = found
    ssh_from = tuple(_cidr(c) for c in args.ssh_from)
    if ssh_from and sgs:
        raise ValidationError("--ssh-from", "with --security-group, your group decides who may "
                              "connect; drop one of them")
    lookup = not ssh_from and not sgs and bool(key_name or ssh_public_key)

    wait = parse_duration(args.agent_wait, field="--agent-wait")
    return LaunchFlags(
        instance_type=instance_type, region=region, ami=ami, name=name, count=count,
        ttl=ttl, idle_timeout=idle, on_complete=on_complete, spot=bool(args.spot),
        spot_max_price=price, hibernate=bool(args.hibernate), key_name=key_name,
        ssh_public_key=ssh_public_key, ssh_key_path=ssh_key_path, ssh_from=ssh_from,
        ssh_from_lookup=lookup, subnet=subnet, security_groups=sgs,
        user_data=_user_data(args.user_data), imds_hop_limit=hop,
        agent_bundle=_agent_bundle(args.agent_bundle),
        dry_run=bool(args.dry_run), wait_agent=wait, no_wait=bool(args.no_wait),
        timeout_defaulted=timeout_defaulted,
        **({"client_token": token} if token else {}),
    )


def open_to_everyone(flags: LaunchFlags) -> bool:
    return any(cidr in EVERYONE for cidr in flags.ssh_from)


def as_dict(flags: LaunchFlags) -> dict[str, Any]:
    """For --dry-run output: the validated flags, without key material or user-data bytes."""
    from spored.contract import format_duration

    return {
        "instance_type": flags.instance_type, "region": flags.region, "ami": flags.ami,
        "name": flags.name, "count": flags.count,
        "ttl": format_duration(flags.ttl) if flags.ttl else None,
        "idle_timeout": format_duration(flags.idle_timeout) if flags.idle_timeout else None,
        "on_complete": flags.on_complete.value, "spot": flags.spot,
        "hibernate": flags.hibernation_configured, "key_name": flags.key_name,
        "ssh_key": flags.ssh_key_path, "ssh_from": list(flags.ssh_from),
        "subnet": flags.subnet, "security_groups": list(flags.security_groups),
        "imds_hop_limit": flags.imds_hop_limit, "client_token": flags.client_token,
    }
