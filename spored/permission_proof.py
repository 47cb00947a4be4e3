"""The agent's permission proof and its one-line console status: shared by both programs. Pure.

At start, and again when the lifecycle action changes, the agent asks EC2 with ``DryRun=True``
whether its role may end its own instance (the action its lifecycle needs) and write its own
status tag. EC2 documents the answers for the DryRun parameter of every action: "If you have the
required permissions, the error response is DryRunOperation. Otherwise, it is
UnauthorizedOperation" (EC2 API Reference, e.g. TerminateInstances and CreateTags, request
parameter ``DryRun``; https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_TerminateInstances.html).
Any other answer (throttling, an unreachable endpoint, missing credentials) is *inconclusive*,
never "denied".

The result must reach the user even when every instance permission is denied, so it does not
depend on CreateTags: the agent writes one line to its standard error, which the unit sends to
the journal and the system console (``StandardError=journal+console``); the controller reads it
with ``ec2:GetConsoleOutput``. The line, greppable and stable::

    spored: permissions ok: ec2:TerminateInstances,ec2:CreateTags
    spored: permissions denied: ec2:TerminateInstances,ec2:CreateTags
    spored: permissions inconclusive: ec2:StopInstances

When CreateTags is allowed, the status tag carries the same ``permissions denied: ...`` text.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from spored.contract import Action

CONSOLE_PREFIX = "spored: "
ALLOWED_CODE = "DryRunOperation"
DENIED_CODE = "UnauthorizedOperation"
_LINE_RE = re.compile(r"permissions (ok|denied|inconclusive): ((?:ec2:[A-Za-z]+,?)+)")


class Verdict(enum.StrEnum):
    OK = "ok"
    DENIED = "denied"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Check:
    """One DryRun call: the EC2 operation, its IAM action, and whether it asks for hibernation."""

    operation: str
    permission: str
    hibernate: bool = False


CREATE_TAGS = Check("CreateTags", "ec2:CreateTags")
_END: dict[Action, Check] = {
    Action.TERMINATE: Check("TerminateInstances", "ec2:TerminateInstances"),
    Action.STOP: Check("StopInstances", "ec2:StopInstances"),
    Action.HIBERNATE: Check("StopInstances", "ec2:StopInstances", hibernate=True),
}


def checks_for(actions: Iterable[Action]) -> tuple[Check, ...]:
    """The calls that prove the lifecycle can end the instance and report: one per distinct end
    action (on-complete and on-idle may differ), then CreateTags."""
    out: list[Check] = []
    for action in actions:
        check = _END[action]
        if check not in out:
            out.append(check)
    return (*out, CREATE_TAGS)


def classify(code: str) -> Verdict:
    if code == ALLOWED_CODE:
        return Verdict.OK
    if code == DENIED_CODE:
        return Verdict.DENIED
    return Verdict.INCONCLUSIVE


@dataclass(frozen=True)
class Proof:
    """What the DryRun calls said, by IAM action (``ec2:StopInstances`` may appear once)."""

    allowed: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()
    inconclusive: tuple[str, ...] = ()

    @property
    def verdict(self) -> Verdict:
        if self.denied:
            return Verdict.DENIED
        if self.inconclusive:
            return Verdict.INCONCLUSIVE
        return Verdict.OK

    def summary(self) -> str:
        """``permissions denied: ec2:A,ec2:B`` - the text the console line and the tag carry."""
        names = {Verdict.DENIED: self.denied, Verdict.INCONCLUSIVE: self.inconclusive,
                 Verdict.OK: self.allowed}[self.verdict]
        return f"permissions {self.verdict}: {','.join(names)}"

    def console_line(self) -> str:
        return CONSOLE_PREFIX + self.summary()

    def to_dict(self) -> dict[str, object]:
        return {"verdict": str(self.verdict), "allowed": list(self.allowed), "denied": list(self.denied),
                "inconclusive": list(self.inconclusive)}


def prove(results: Iterable[tuple[Check, str]]) -> Proof:
    """The proof from (check, AWS error code) pairs."""
    allowed: list[str] = []
    denied: list[str] = []
    unsure: list[str] = []
    for check, code in results:
        bucket = {Verdict.OK: allowed, Verdict.DENIED: denied, Verdict.INCONCLUSIVE: unsure}[classify(code)]
        if check.permission not in bucket:
            bucket.append(check.permission)
    return Proof(tuple(allowed), tuple(denied), tuple(unsure))


@dataclass(frozen=True)
class Reported:
    """A permission status found in text (a console output or a status tag value)."""

    verdict: Verdict
    actions: tuple[str, ...]

    def text(self) -> str:
        return f"permissions {self.verdict}: {','.join(self.actions)}"


def find_reported(text: str) -> Reported | None:
    """The LAST permission status in ``text`` (a re-check after a change wins), or None."""
    found = None
    for match in _LINE_RE.finditer(text or ""):
        found = match
    if found is None:
        return None
    return Reported(Verdict(found.group(1)), tuple(a for a in found.group(2).split(",") if a))
