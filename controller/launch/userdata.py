"""User-data rendering: pure. The agent is installed and started FIRST, then the user's own data runs.

The result is a cloud-init multipart/mixed document:
  part 1  text/x-shellscript ``00-spored-install.sh``: downloads the agent bundle, verifies the
          sha256 the controller computed itself, writes /etc/spored/spored.toml, makes sure a
          Python >= 3.11 exists, and runs the bundle's ``install.sh`` (venv, unit, start).
  part 2  the user's --user-data exactly as given (base64 transfer encoding keeps every byte),
          typed by cloud-init's own first-line rules; named ``50-user-data`` so that cloud-init's
          scripts-user stage (which runs scripts in name order) runs it after part 1.

No tag value, name or parameter is rendered into shell: the script holds only a base64 of the
bundle URL, a hex sha256, a base64 of the TOML config and integers the controller computed.
If the raw document exceeds EC2's 16 KB limit it is gzipped (cloud-init detects gzip); if it is
still too large, ValidationError names --user-data.
"""

from __future__ import annotations

import base64
import gzip
import re
from dataclasses import dataclass
from email.encoders import encode_base64
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.policy import compat32

from spored.errors import ValidationError

EC2_USER_DATA_LIMIT = 16 * 1024
INSTALL_PART_NAME = "00-spored-install.sh"
USER_PART_NAME = "50-user-data"
BOUNDARY = "==spawn-user-data=="
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_URL = re.compile(r"^https?://[A-Za-z0-9.\-]+(?::\d{1,5})?(?:/[A-Za-z0-9._~%/+=\-]*)?"
                  r"(?:\?[A-Za-z0-9._~%&=+/\-]*)?$")

# cloud-init's "starts with" rules (cloudinit/handlers/__init__.py INCLUSION_TYPES_MAP).
_CLOUD_INIT_TYPES = (
    ("#!", "text/x-shellscript"),
    ("#cloud-config-archive", "text/cloud-config-archive"),
    ("#cloud-config", "text/cloud-config"),
    ("#cloud-boothook", "text/cloud-boothook"),
    ("#include-once", "text/x-include-once-url"),
    ("#include", "text/x-include-url"),
    ("#part-handler", "text/part-handler"),
    ("## template: jinja", "text/jinja2"),
)


@dataclass(frozen=True)
class BundleRef:
    """Where the instance fetches the agent bundle, and the sha256 the controller computed."""

    url: str
    sha256: str


def user_data_type(data: bytes) -> str:
    """The MIME type cloud-init would give ``data``; ValidationError if it would ignore it."""
    head = data.lstrip(b"\xef\xbb\xbf")[:64].decode("utf-8", errors="replace")
    for prefix, mime in _CLOUD_INIT_TYPES:
        if head.startswith(prefix):
            return mime
    if head.lower().startswith(("content-type:", "mime-version:")) or data[:2] == b"\x1f\x8b":
        raise ValidationError("--user-data", "is already a MIME or gzip document; accepted: one "
                              "script (#!...) or one #cloud-config document, uncompressed")
    raise ValidationError("--user-data", "cloud-init would ignore it; accepted: a script starting "
                          "with #! or a document starting with #cloud-config (or another "
                          "cloud-init header: #cloud-boothook, #include, #part-handler)")


# The failsafe helper, written by the install script before anything else (see docs/failsafe.md).
# `arm EPOCH` (re)creates the transient timer spawn-failsafe.timer that powers the machine off at
# EPOCH (UTC seconds, at least 60 s from now) by running `fire` (which waits 120 s for a running
# agent to move it, then powers off); `rearm` does the same at the time the agent asked
# for in /run/spored/failsafe (spored-failsafe.path runs it), only when that file is a regular
# file of user spored (stat does not follow links); `disarm` stops it. Integers only: the
# controller computed EPOCH, and a request is refused unless it is digits or "none".
FAILSAFE_HELPER = """\
#!/bin/sh
# spawn-failsafe: the OS-level power-off that needs no agent. Written by spawn's user-data.
set -eu
REQUEST=/run/spored/failsafe
UNIT=spawn-failsafe
say() { printf 'spawn-failsafe: %s\\n' "$*"; }
stop_timer() {
    # the service too: a "fire" waiting for a running agent to re-arm ends here
    systemctl stop "$UNIT.timer" "$UNIT.service" >/dev/null 2>&1 || true
    systemctl reset-failed "$UNIT.timer" "$UNIT.service" >/dev/null 2>&1 || true
}
arm() {
    at=$1
    now=$(date +%s)
    [ "$at" -ge $((now + 60)) ] || at=$((now + 60))
    when=$(date -u -d "@$at" '+%Y-%m-%d %H:%M:%S UTC')
    stop_timer
    if systemd-run --quiet --unit="$UNIT" --on-calendar="$when" --timer-property=AccuracySec=1s \\
            --description="spawn failsafe: power off unless spored moves it" \\
            /bin/sh -c "/bin/sh $0 fire || systemctl poweroff"; then
        say "power-off armed for $when ($UNIT.timer)"
    else
        shutdown -P "+$(( (at - now + 59) / 60 ))" "spawn failsafe"
        say "power-off armed for $when (shutdown -P)"
    fi
}
case "${1:-}" in
arm)
    case "${2:-}" in ''|*[!0-9]*) say "usage: spawn-failsafe arm EPOCH_SECONDS" >&2; exit 2 ;; esac
    arm "$2" ;;
disarm)
    stop_timer
    say "disarmed" ;;
fire)
    # The timer elapsed. A running agent may be about to move it (after a resume from
    # hibernation, whose sleep the calendar time passed, or a clock step): give it 120 s;
    # its re-arm stops this service. Otherwise, or without an agent, power off now.
    if systemctl is-active --quiet spored.service; then
        say "elapsed; spored is running: powering off in 120 s unless it moves the failsafe"
        sleep 120
    fi
    say "powering off"
    systemctl poweroff ;;
rearm)
    if [ "$(stat -c '%U %F' "$REQUEST" 2>/dev/null)" != "spored regular file" ]; then
        say "ignoring $REQUEST: not a regular file of user spored" >&2
        exit 1
    fi
    line=$(head -c 32 "$REQUEST" | head -n 1)
    case "$line" in
    none) stop_timer; say "disarmed: spored says this instance is not managed" ;;
    ''|*[!0-9]*) say "ignoring $REQUEST: not epoch seconds or none" >&2; exit 1 ;;
    *) arm "$line" ;;
    esac ;;
*) say "usage: spawn-failsafe arm EPOCH | rearm | disarm" >&2; exit 2 ;;
esac
"""
FAILSAFE_HELPER_PATH = "/usr/local/sbin/spawn-failsafe"

_INSTALL_SCRIPT = """\
#!/bin/sh
# Written by spawn: arm the failsafe, then install and start the spored agent, before anything
# else on this instance. Holds no tag value or name: only base64 data, a sha256 and integers
# computed by the controller.
set -eu
umask 022
FAILSAFE_AT='{failsafe_at}'
BUNDLE_URL_B64='{url_b64}'
BUNDLE_SHA256='{sha256}'
CONFIG_B64='{config_b64}'
FAILSAFE_B64='{helper_b64}'

log() {{ printf 'spawn-install: %s\\n' "$*" | tee /dev/console >&2 2>/dev/null || true; }}

# 1. Before any download: the OS-level failsafe (a power-off the agent re-arms when it runs).
printf '%s' "$FAILSAFE_B64" | base64 -d > {helper_path}.new
chmod 0755 {helper_path}.new
mv -f {helper_path}.new {helper_path}
if [ "$FAILSAFE_AT" -gt 0 ]; then
    {helper_path} arm "$FAILSAFE_AT" 2>&1 | tee /dev/console >&2 2>/dev/null || true
else
    log "no failsafe: launched with --no-timeout"
fi

failed() {{
    status=$?
    [ "$status" -eq 0 ] && return 0
    log "agent install FAILED (exit $status); the failsafe stays armed"
    return "$status"
}}
trap failed EXIT

work=$(mktemp -d /var/tmp/spored-install.XXXXXX)
url=$(printf '%s' "$BUNDLE_URL_B64" | base64 -d)
log "downloading the agent bundle"
curl --fail --silent --show-error --location --proto '=https,http' \\
     --retry 8 --retry-connrefused --retry-max-time 300 --connect-timeout 10 \\
     --output "$work/bundle.tar.gz" "$url"
printf '%s  %s\\n' "$BUNDLE_SHA256" "$work/bundle.tar.gz" | sha256sum -c - >/dev/null
log "bundle sha256 verified"

mkdir -p /etc/spored
printf '%s' "$CONFIG_B64" | base64 -d > /etc/spored/spored.toml.new
chmod 0644 /etc/spored/spored.toml.new
mv /etc/spored/spored.toml.new /etc/spored/spored.toml

python=''
for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        python=$(command -v "$candidate"); break
    fi
done
if [ -z "$python" ]; then
    log "installing python3.11"
    if command -v dnf >/dev/null 2>&1; then dnf install -y python3.11
    elif command -v yum >/dev/null 2>&1; then yum install -y python3.11
    elif command -v apt-get >/dev/null 2>&1; then apt-get update && apt-get install -y python3.11-venv
    fi
    python=$(command -v python3.11)
fi

mkdir -p "$work/bundle"
tar -xzf "$work/bundle.tar.gz" -C "$work/bundle" --no-same-owner
installer=$(find "$work/bundle" -maxdepth 2 -name install.sh -type f | head -n 1)
[ -n "$installer" ] || {{ log "bundle has no install.sh"; exit 1; }}
log "running the bundle's install.sh"
sh "$installer" --python "$python" "$(dirname "$installer")"
rm -rf "$work"
log "agent installed and started"
"""


def install_script(bundle: BundleRef, config_toml: str, failsafe_at: int = 0) -> str:
    """Part 1: the agent install script (shell with no user-controlled text in it).

    ``failsafe_at``: epoch seconds of the OS power-off armed first (0: none, ``--no-timeout``)."""
    if not _URL.match(bundle.url):
        raise ValidationError("--agent-bundle", f"{bundle.url!r} is not an accepted URL")
    if not _HEX64.match(bundle.sha256):
        raise ValueError("bundle sha256 must be 64 lowercase hex digits")
    if type(failsafe_at) is not int or not (failsafe_at == 0 or 10**9 <= failsafe_at < 10**11):
        raise ValueError("failsafe_at must be 0 or epoch seconds")
    return _INSTALL_SCRIPT.format(
        failsafe_at=failsafe_at,
        url_b64=base64.b64encode(bundle.url.encode()).decode("ascii"),
        sha256=bundle.sha256,
        config_b64=base64.b64encode(config_toml.encode()).decode("ascii"),
        helper_b64=base64.b64encode(FAILSAFE_HELPER.encode()).decode("ascii"),
        helper_path=FAILSAFE_HELPER_PATH,
    )


def _part(mime: str, payload: bytes, filename: str) -> MIMEBase:
    maintype, subtype = mime.split("/", 1)
    part = MIMEBase(maintype, subtype)
    part.set_payload(payload)
    encode_base64(part)
    part.add_header("Content-Disposition", "attachment", filename=filename)
    return part


def render(bundle: BundleRef, config_toml: str, user_data: bytes | None = None,
           *, failsafe_at: int = 0) -> bytes:
    """The complete user-data, as bytes EC2 will store (gzipped when it must be)."""
    doc = MIMEMultipart("mixed", boundary=BOUNDARY, policy=compat32)
    doc.attach(_part("text/x-shellscript",
                     install_script(bundle, config_toml, failsafe_at).encode(), INSTALL_PART_NAME))
    if user_data is not None:
        doc.attach(_part(user_data_type(user_data), user_data, USER_PART_NAME))
    raw = doc.as_bytes()
    if len(raw) <= EC2_USER_DATA_LIMIT:
        return raw
    packed = gzip.compress(raw, mtime=0)
    if len(packed) > EC2_USER_DATA_LIMIT:
        raise ValidationError("--user-data", f"the user-data is {len(packed)} bytes even gzipped; "
                              f"EC2 accepts at most {EC2_USER_DATA_LIMIT} bytes: move the bulk of the "
                              "script to S3 and fetch it from a shorter script")
    return packed


def parts(rendered: bytes) -> list[tuple[str, str | None, bytes]]:
    """Decode rendered user-data into (content type, filename, payload) - for --dry-run and tests."""
    import email

    raw = gzip.decompress(rendered) if rendered[:2] == b"\x1f\x8b" else rendered
    message = email.message_from_bytes(raw, policy=compat32)
    out: list[tuple[str, str | None, bytes]] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        out.append((part.get_content_type(), part.get_filename(),
                    payload if isinstance(payload, bytes) else b""))
    return out
