"""What `spawn doctor` reports: one result per check, the JSON shape and the exit status (pure).

A check ends in one of four states:

- ``ok``: checked, and a launch would get past this point;
- ``warn``: a launch would work, but something deserves a fix (SSH open to the world, no key...);
- ``fail``: a launch would fail here (or do something the user does not want), and ``fix`` says how
  to put it right;
- ``could-not-check``: the question could not be answered (no credentials to ask with, or the API
  cannot answer it, as moto cannot answer ``iam:SimulatePrincipalPolicy``). Never reported as ok.

The ``--json`` shape is stable: ``{"checks": [{"name", "status", "detail", "fix"}], "ok": bool}``
with ``fix`` null when there is nothing to do, and ``ok`` true exactly when no check failed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from spored.errors import ExitStatus


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    UNKNOWN = "could-not-check"


# How each status is shown to people, in a fixed-width column.
LABELS = {Status.OK: "ok", Status.WARN: "warn", Status.FAIL: "FAIL", Status.UNKNOWN: "could not check"}

# The checks, in the order they run and are shown (their names are part of the JSON shape).
CHECK_NAMES = ("credentials", "region", "network", "ami", "ssh-key", "ssh-from", "permissions",
               "bundle-bucket")

NAME_WIDTH = max(len(n) for n in CHECK_NAMES)


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None

    def __post_init__(self) -> None:
        if self.status in (Status.FAIL, Status.WARN) and not self.fix:
            raise ValueError(f"check {self.name}: a {self.status.value} needs a fix")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.value, "detail": self.detail, "fix": self.fix}


def blocked(checks: Iterable[Check]) -> bool:
    """True when a launch would fail: at least one check failed."""
    return any(c.status is Status.FAIL for c in checks)


def exit_status(checks: Iterable[Check]) -> ExitStatus:
    return ExitStatus.PREFLIGHT if blocked(checks) else ExitStatus.OK


def to_json(checks: Sequence[Check]) -> dict[str, Any]:
    return {"checks": [c.to_dict() for c in checks], "ok": not blocked(checks)}


def lines(checks: Sequence[Check], *, name_width: int = NAME_WIDTH) -> list[str]:
    """One line per check: status, name, what was found, and the fix when there is one."""
    width = max(len(label) for label in LABELS.values())
    out = []
    for c in checks:
        text = f"{LABELS[c.status]:<{width}}  {c.name:<{name_width}}  {c.detail}"
        if c.fix:
            text += f" -> fix: {c.fix}"
        out.append(text)
    return out


def summary(checks: Sequence[Check]) -> str:
    counts = {s: sum(1 for c in checks if c.status is s) for s in Status}
    verdict = "a launch would fail: fix the FAIL lines first" if blocked(checks) else \
        "no check found anything that blocks a launch"
    parts = [f"{counts[s]} {LABELS[s]}" for s in Status if counts[s]]
    return f"{verdict} ({', '.join(parts)})"
