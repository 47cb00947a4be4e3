"""The permission proof that runs ON the instance, signed by the instance role's own credentials.

Only AWS can say whether the role's conditions match (moto ignores IAM conditions), and only a
live call says it: EC2's ``DryRun`` parameter answers ``DryRunOperation`` when the call would have
been allowed and ``UnauthorizedOperation`` when it would not, without doing anything (Amazon EC2
API Reference, "Common parameters": DryRun; "Error codes": DryRunOperation, UnauthorizedOperation).

The proof is a small Python program, run by the agent's own Python (the bundle's venv has boto3)
from the second user-data part, after the agent is installed. It prints one line per call, to
its standard output and to the serial console, which the workstation reads with
``GetConsoleOutput``. Selftest renders it with two values only, both validated against strict
patterns (the peer instance id and the region), passed as arguments, never interpolated into
shell. Against the local cloud the very same program runs as a local process, with the IMDS
emulator's role credentials (``AWS_EC2_METADATA_SERVICE_ENDPOINT``).

The peer is a second instance selftest launches for the purpose, tagged ``spawn:managed=true``
but with no agent: ending it must be denied by the self-scoping condition alone. (An unmanaged
peer would be denied by the managed-tag condition already, which proves nothing about whether
the role can reach other instances.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from spored.contract import AGENT_WRITABLE_TAGS, TAG_NAME

from .stages import Verdict

PREFIX = "spawn-selftest:"
DONE = f"{PREFIX} proof done"
AGENT_PYTHON = "/opt/spored/venv/bin/python"
INSTANCE_ID_RE = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
REGION_RE = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d{1,2}$")
_LINE_RE = re.compile(rf"^{re.escape(PREFIX)} proof target=(self|peer) action=(\S+) expect=(allowed|denied) "
                      r"got=(allowed|denied|inconclusive) code=(\S*)$")

# The calls, what each must answer, and why. Expectations follow the agent's policy
# (controller.iam.agent_policy): it may end and tag ITSELF with its own keys, nothing more.
PROGRAM = '''\
import json, os, sys, urllib.request
import boto3
from botocore.exceptions import ClientError

peer, region = sys.argv[1], sys.argv[2]
console = sys.argv[3] if len(sys.argv) > 3 else ""
base = os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://169.254.169.254").rstrip("/")
req = urllib.request.Request(base + "/latest/api/token", method="PUT",
                             headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
token = urllib.request.urlopen(req, timeout=5).read().decode()
req = urllib.request.Request(base + "/latest/meta-data/instance-id",
                             headers={"X-aws-ec2-metadata-token": token})
me = urllib.request.urlopen(req, timeout=5).read().decode().strip()
ec2 = boto3.client("ec2", region_name=region)
own_key, foreign_key = AGENT_KEY, FOREIGN_KEY
calls = [
    ("self", "ec2:TerminateInstances", "allowed", lambda: ec2.terminate_instances(
        InstanceIds=[me], DryRun=True)),
    ("self", "ec2:StopInstances", "allowed", lambda: ec2.stop_instances(InstanceIds=[me], DryRun=True)),
    ("self", "ec2:CreateTags", "allowed", lambda: ec2.create_tags(
        Resources=[me], Tags=[{"Key": own_key, "Value": "selftest"}], DryRun=True)),
    ("self", "ec2:CreateTags:" + foreign_key, "denied", lambda: ec2.create_tags(
        Resources=[me], Tags=[{"Key": foreign_key, "Value": "selftest"}], DryRun=True)),
    ("self", "ec2:DeleteTags", "denied", lambda: ec2.delete_tags(
        Resources=[me], Tags=[{"Key": own_key}], DryRun=True)),
    ("peer", "ec2:TerminateInstances", "denied", lambda: ec2.terminate_instances(
        InstanceIds=[peer], DryRun=True)),
    ("peer", "ec2:StopInstances", "denied", lambda: ec2.stop_instances(InstanceIds=[peer], DryRun=True)),
    ("peer", "ec2:CreateTags", "denied", lambda: ec2.create_tags(
        Resources=[peer], Tags=[{"Key": own_key, "Value": "selftest"}], DryRun=True)),
]
def say(line):
    print(line, flush=True)
    if console:
        try:
            with open(console, "a") as f:
                f.write(line + "\\n")
        except OSError:
            pass
for target, action, expect, call in calls:
    try:
        call()
        got, code = "inconclusive", "NoError"
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        got = {"DryRunOperation": "allowed", "UnauthorizedOperation": "denied"}.get(code, "inconclusive")
    except Exception as exc:
        got, code = "inconclusive", type(exc).__name__
    say(f"PREFIX proof target={target} action={action} expect={expect} got={got} code={code}")
say("PREFIX proof done")
'''.replace("PREFIX", PREFIX).replace("AGENT_KEY", repr(AGENT_WRITABLE_TAGS[0])).replace(
    "FOREIGN_KEY", repr(TAG_NAME))


def _checked(peer: str, region: str) -> None:
    if not INSTANCE_ID_RE.match(peer):
        raise ValueError(f"peer instance id {peer!r} is not an instance id")
    if not REGION_RE.match(region):
        raise ValueError(f"region {region!r} is not a region name")


def arguments(peer: str, region: str) -> list[str]:
    _checked(peer, region)
    return [peer, region]


def user_data(peer: str, region: str) -> bytes:
    """The selftest's own user-data part: runs the proof with the agent's Python once it is installed.

    Values are checked against strict patterns; they appear only as single-quoted arguments.
    """
    _checked(peer, region)
    return (
        "#!/bin/sh\n"
        "# spawn selftest: prove with this instance's own role what it may and may not do.\n"
        f"py={AGENT_PYTHON}\n"
        f'[ -x "$py" ] || {{ echo "{PREFIX} proof skipped: no agent" > /dev/console; exit 0; }}\n'
        f"\"$py\" - '{peer}' '{region}' /dev/console <<'SPAWN_SELFTEST_PROOF'\n"
        f"{PROGRAM}"
        "SPAWN_SELFTEST_PROOF\n"
    ).encode()


@dataclass(frozen=True)
class ProofLine:
    target: str
    action: str
    expect: str
    got: str
    code: str

    @property
    def text(self) -> str:
        return f"{self.target} {self.action}: {self.got} ({self.code or 'no code'}), expected {self.expect}"


def parse(lines: Iterable[str]) -> tuple[list[ProofLine], bool]:
    """The proof lines found in console or process output, and whether the proof finished."""
    found: list[ProofLine] = []
    done = False
    for raw in lines:
        line = raw.strip().replace("\r", "")
        if line.endswith(DONE):
            done = True
            continue
        start = line.find(PREFIX)
        match = _LINE_RE.match(line[start:]) if start >= 0 else None
        if match:
            found.append(ProofLine(*match.groups()))
    return found, done


def judge(lines: list[ProofLine], done: bool, *, local: bool, peer_is_real: bool) -> tuple[Verdict, str]:
    """The permission stage's verdict from the proof's lines. Pure.

    On AWS: every expectation must hold. Locally, moto ignores IAM conditions, so a denial can't be
    observed: only "the role may act on itself" is checked, and the rest is not decided here.
    """
    if not done:
        return Verdict.FAILED, "the proof did not finish (no result from the instance)"
    self_lines = [p for p in lines if p.target == "self"]
    peer_lines = [p for p in lines if p.target == "peer"]
    refused_self = [p for p in self_lines if p.expect == "allowed" and p.got != "allowed"]
    if refused_self:
        return Verdict.FAILED, "the role may not act on its own instance: " + "; ".join(
            p.text for p in refused_self)
    wrong = [p for p in lines if p.expect == "denied" and p.got == "allowed"]
    if local:
        return Verdict.NOT_DECIDED_HERE, (
            "allowed on itself; denials are not decided here: moto ignores IAM conditions, so only AWS "
            "can show the role cannot end or tag another instance")
    if wrong:
        return Verdict.FAILED, "the role can do more than end and tag itself: " + "; ".join(
            p.text for p in wrong)
    unclear = [p for p in lines if p.expect == "denied" and p.got == "inconclusive"]
    if not peer_is_real or (peer_lines and all(p.got == "inconclusive" for p in peer_lines)):
        return Verdict.INCONCLUSIVE, (
            "allowed on itself, own-instance denials hold; the other-instance proof is inconclusive "
            "(no second instance could be launched, so a made-up instance id was used)")
    if unclear:
        return Verdict.INCONCLUSIVE, "allowed on itself; unclear answers: " + "; ".join(
            p.text for p in unclear)
    return Verdict.PASSED, (f"allowed on itself ({len(self_lines)} calls), denied on the other instance "
                            f"({len(peer_lines)} calls) and for foreign tag keys")
