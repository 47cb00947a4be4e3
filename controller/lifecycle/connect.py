"""`spawn connect`: SSH as the AMI's user, with the host key checked.

The host key comes from the instance's console output when cloud-init printed it (the
``SSH HOST KEY KEYS`` block; with only the ``FINGERPRINTS`` block, the keys ``ssh-keyscan`` gets
are kept only if their SHA256 fingerprints match): written to spawn's own known_hosts under the instance id as
HostKeyAlias and enforced with ``StrictHostKeyChecking=yes``. Otherwise trust on first use into
that same file (``accept-new``: a changed key is still refused). Never ``StrictHostKeyChecking=no``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from controller import aws
from controller.launch.ami import login_user
from controller.lifecycle.find import Found
from spored.errors import ValidationError

_BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
_END = "-----END SSH HOST KEY KEYS-----"
_FP_BEGIN = "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
_FP_END = "-----END SSH HOST KEY FINGERPRINTS-----"
_FP_LINE = re.compile(r"\bSHA256:([A-Za-z0-9+/]{43})=?")
_KEY_LINE = re.compile(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)|ssh-dss)\s+([A-Za-z0-9+/=]+)")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def parse_host_keys(console: str) -> list[tuple[str, str]]:
    """Pure: (key type, base64) pairs from the last host-key block cloud-init printed."""
    start = console.rfind(_BEGIN)
    if start < 0:
        return []
    end = console.find(_END, start)
    if end < 0:
        return []
    keys: list[tuple[str, str]] = []
    for line in console[start + len(_BEGIN):end].splitlines():
        match = _KEY_LINE.search(line)
        if not match:
            continue
        try:
            base64.b64decode(match.group(2), validate=True)
        except (binascii.Error, ValueError):
            continue
        keys.append((match.group(1), match.group(2)))
    return keys


def parse_fingerprints(console: str) -> set[str]:
    """Pure: the SHA256 host-key fingerprints cloud-init printed (without the ``SHA256:`` prefix)."""
    start = console.rfind(_FP_BEGIN)
    end = console.find(_FP_END, start) if start >= 0 else -1
    if start < 0 or end < 0:
        return set()
    return {m.group(1) for m in _FP_LINE.finditer(console[start:end])}


def fingerprint(blob_b64: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob (base64, no padding)."""
    digest = hashlib.sha256(base64.b64decode(blob_b64)).digest()
    return base64.b64encode(digest).decode().rstrip("=")


def matching_keys(scanned: str, fingerprints: set[str]) -> list[tuple[str, str]]:
    """Pure: the keys from ``ssh-keyscan`` output whose fingerprints the console vouched for."""
    keys: list[tuple[str, str]] = []
    for line in scanned.splitlines():
        if line.startswith("#"):
            continue
        match = _KEY_LINE.search(line)
        if match and fingerprint(match.group(2)) in fingerprints:
            keys.append((match.group(1), match.group(2)))
    return keys


def scan_verified(address: str, fingerprints: set[str]) -> list[tuple[str, str]]:
    """ssh-keyscan the host and keep only keys the console output vouches for.

    Keys were offered but none matched: refuse (the host is not who the console says)."""
    try:
        proc = subprocess.run(["ssh-keyscan", "-T", "5", address], capture_output=True, text=True,
                              timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    keys = matching_keys(proc.stdout, fingerprints)
    if proc.stdout.strip() and not keys:
        raise ValidationError("INSTANCE", f"the host key {address} offers matches none of the "
                              "fingerprints in the instance's console output; refusing to connect")
    return keys


def known_hosts_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "spawn" / "known_hosts"


def record_host_keys(path: Path, alias: str, keys: list[tuple[str, str]]) -> None:
    """Replace ``alias``'s lines in spawn's known_hosts with ``keys`` (file mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [ln for ln in lines if ln.split(" ", 1)[0] != alias]
    kept += [f"{alias} {kind} {blob}" for kind, blob in keys]
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(kept) + "\n")
    tmp.replace(path)


def ssh_command(*, user: str, address: str, alias: str, known_hosts: Path, verified: bool,
                identity: str | None = None, extra: list[str] | None = None) -> list[str]:
    """Pure: the ssh argv. ``verified``: the key came from the console (strict); else TOFU."""
    argv = ["ssh",
            "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", f"HostKeyAlias={alias}",
            "-o", "StrictHostKeyChecking=" + ("yes" if verified else "accept-new"),
            "-o", "CheckHostIP=no"]
    if identity:
        argv += ["-i", identity]
    argv.append(f"{user}@{address}")
    return argv + (["--", *extra] if extra else [])


def console_output(ec2: Any, instance_id: str) -> str:
    try:
        resp = ec2.get_console_output(InstanceId=instance_id, Latest=True)
    except Exception:
        try:
            resp = ec2.get_console_output(InstanceId=instance_id)
        except Exception:
            return ""
    text = str(resp.get("Output") or "")
    # The API returns the console base64-encoded (the AWS CLI decodes it; boto3 does not).
    compact = "".join(text.split())
    if compact and _BEGIN not in text:
        try:
            return base64.b64decode(compact, validate=True).decode("utf-8", errors="replace")
        except (binascii.Error, ValueError):
            pass
    return text


def prepare(found: Found, *, user: str | None = None, private: bool = False,
            identity: str | None = None, extra: list[str] | None = None) -> dict[str, Any]:
    """Work out user, address and host-key handling; returns the argv and how the key is checked."""
    if user is not None and not _USER_RE.match(user):
        raise ValidationError("--user", f"{user!r}; accepted: a POSIX user name")
    if found.state != "running":
        raise ValidationError("INSTANCE", f"{found.instance_id} is {found.state}; start it first "
                              f"(spawn start {found.instance_id})")
    inst = found.instance
    address = inst.get("PrivateIpAddress") if private else \
        (inst.get("PublicIpAddress") or inst.get("PublicDnsName"))
    if not address:
        raise ValidationError("INSTANCE", f"{found.instance_id} has no "
                              f"{'private' if private else 'public'} address"
                              + ("" if private else "; use --private from inside its VPC"))
    ec2 = aws.client("ec2", found.region)
    if user is None:
        try:
            images = ec2.describe_images(ImageIds=[inst["ImageId"]]).get("Images", [])
        except Exception:
            images = []
        description = " ".join(str(images[0].get(k) or "") for k in ("Name", "Description")) if images else ""
        user = login_user(description)
    console = console_output(ec2, found.instance_id)
    keys = parse_host_keys(console)
    if not keys and (fingerprints := parse_fingerprints(console)):
        keys = scan_verified(str(address), fingerprints)
    path = known_hosts_path()
    if keys:
        record_host_keys(path, found.instance_id, keys)
    argv = ssh_command(user=user, address=str(address), alias=found.instance_id, known_hosts=path,
                       verified=bool(keys), identity=identity, extra=extra)
    return {"instance_id": found.instance_id, "user": user, "address": address,
            "host_key": "verified from console output" if keys else "trust on first use",
            "known_hosts": str(path), "argv": argv}
