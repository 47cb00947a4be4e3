"""What `spawn selftest` checks, in order, and how a run is judged and reported. Pure.

Each stage has a stable name (the ``--json`` key), a plain-language title and the fix to print
when it fails. A stage is only checked once every stage before it passed; the rest are reported
``not-reached``. Against the local cloud (moto and the sandbox's agent), the stages whose answer
only AWS can give are reported ``not-decided-here`` with the reason, never ``passed``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TextIO

# The whole run is bounded: after this long selftest stops waiting and ends everything it created.
MAX_RUN = timedelta(minutes=10)
DEFAULT_TTL = timedelta(minutes=3)
# The instance types selftest offers: the smallest of each architecture (arm64 first: cheaper).
INSTANCE_TYPES = ("t4g.nano", "t3.nano")
# Instances selftest launches: the one under test and the unmanaged one it must not be able to end.
INSTANCES = 2


class Verdict(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    NOT_DECIDED_HERE = "not-decided-here"
    NOT_REACHED = "not-reached"


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    fix: str


STAGES: tuple[Stage, ...] = (
    Stage("role", "role composed and linted",
          "fix the policy errors named above (`spawn iam lint FILE` shows them) or the IAM permissions "
          "of your CLI policy (`spawn iam cli-policy`)"),
    Stage("running", "instance running",
          "check the region's EC2 quotas (running on-demand standard instances) and that the type is "
          "offered there; `spawn doctor` checks the account before a launch"),
    Stage("failsafe", "failsafe armed before anything was downloaded",
          "the user-data's first step did not run: check that the AMI runs cloud-init (Amazon Linux 2023 "
          "does) and read the console output (`aws ec2 get-console-output --latest --instance-id ID`)"),
    Stage("agent", "agent installed and ready",
          "the instance could not download or install the agent: check that the subnet reaches S3 (an "
          "internet gateway, a NAT or an S3 gateway endpoint) and that the AMI offers Python >= 3.11; "
          "the console output shows install.sh's messages"),
    Stage("permissions", "DryRun proof: may end and tag itself, not another instance",
          "compare the instance role with `spawn iam agent-policy`; a permissions boundary or an "
          "organization SCP may deny ec2:TerminateInstances, ec2:StopInstances or ec2:CreateTags"),
    Stage("status", "agent status visible from this workstation",
          "your credentials need ec2:DescribeInstances in this region (`spawn iam cli-policy`)"),
    Stage("warning", "warning issued before the deadline",
          "the agent gave no warning: read its journal (`journalctl -u spored`) over SSH or in the "
          "console output"),
    Stage("agent-ends", "TerminateInstances called by the agent at the deadline",
          "the agent did not end the instance through the EC2 API: see the permission stage and the "
          "agent's journal; an instance that ended anyway was ended by the OS failsafe"),
    Stage("terminated", "instance terminated",
          "the instance did not reach `terminated`: check that its shutdown behaviour is terminate, "
          "and end it with `spawn terminate ID` if selftest could not"),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
_BY_NAME = {s.name: s for s in STAGES}


@dataclass
class StageResult:
    name: str
    verdict: Verdict
    detail: str = ""
    seconds: float | None = None

    @property
    def stage(self) -> Stage:
        return _BY_NAME[self.name]

    def to_dict(self) -> dict[str, Any]:
        failed = self.verdict is Verdict.FAILED
        return {"name": self.name, "title": self.stage.title, "verdict": self.verdict.value,
                "seconds": None if self.seconds is None else round(self.seconds, 1),
                "detail": self.detail, "fix": self.stage.fix if failed else None}


@dataclass(frozen=True)
class Budget:
    """The most a run can cost and take, printed before anything is created."""

    instance_type: str
    usd_per_hour: float | None
    max_run: timedelta = MAX_RUN
    instances: int = INSTANCES

    @property
    def max_usd(self) -> float | None:
        if self.usd_per_hour is None:
            return None
        # EC2 bills Linux on-demand per second with a 60 s minimum; the bound counts every
        # instance for the whole run.
        return round(self.usd_per_hour * self.instances * self.max_run.total_seconds() / 3600, 4)

    def to_dict(self) -> dict[str, Any]:
        return {"instance_type": self.instance_type, "instances": self.instances,
                "usd_per_hour_each": self.usd_per_hour, "max_minutes": self.max_run.total_seconds() / 60,
                "max_usd": self.max_usd}

    def text(self) -> str:
        cost = (f"at most ~${self.max_usd:.4f} (ESTIMATE: {self.instances} x {self.instance_type} at "
                f"${self.usd_per_hour}/h for {int(self.max_run.total_seconds() // 60)} min, plus a few "
                "cents' fraction for the 8 GiB volumes and public IPv4 addresses)"
                if self.max_usd is not None else "no price estimate for this type")
        return (f"selftest budget: {self.instances} x {self.instance_type}, ends everything it created "
                f"within {int(self.max_run.total_seconds() // 60)} minutes; cost {cost}")


@dataclass
class Report:
    run_id: str
    region: str
    local: bool
    budget: Budget
    results: list[StageResult] = field(default_factory=list)
    instance_id: str | None = None
    peer_id: str | None = None
    cleanup: dict[str, list[str]] = field(default_factory=dict)
    interrupted: bool = False
    error: str | None = None

    def record(self, result: StageResult) -> StageResult:
        self.results = [r for r in self.results if r.name != result.name] + [result]
        return result

    def verdict(self, name: str) -> Verdict | None:
        return next((r.verdict for r in self.results if r.name == name), None)

    def complete(self) -> None:
        """Every stage not checked is ``not-reached``; results in stage order."""
        seen = {r.name for r in self.results}
        self.results += [StageResult(n, Verdict.NOT_REACHED) for n in STAGE_NAMES if n not in seen]
        self.results.sort(key=lambda r: STAGE_NAMES.index(r.name))

    @property
    def ok(self) -> bool:
        good = {Verdict.PASSED, Verdict.NOT_DECIDED_HERE, Verdict.INCONCLUSIVE}
        return (not self.interrupted and self.error is None and not self.cleanup.get("failed")
                and len(self.results) == len(STAGES) and all(r.verdict in good for r in self.results))

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "run_id": self.run_id, "region": self.region, "local_cloud": self.local,
                "instance_id": self.instance_id, "peer_instance_id": self.peer_id,
                "budget": self.budget.to_dict(), "interrupted": self.interrupted, "error": self.error,
                "stages": [r.to_dict() for r in self.results],
                "cleanup": {k: list(v) for k, v in self.cleanup.items()}}


_MARKS = {Verdict.PASSED: "ok", Verdict.FAILED: "FAIL", Verdict.INCONCLUSIVE: "??",
          Verdict.NOT_DECIDED_HERE: "--", Verdict.NOT_REACHED: ".."}


def render(report: dict[str, Any], stream: TextIO) -> None:
    """The human report: one line per stage with its time and verdict, the fix under a failure."""
    where = "the local cloud" if report["local_cloud"] else f"AWS {report['region']}"
    stream.write(f"spawn selftest {report['run_id']} in {where}"
                 + (f": instance {report['instance_id']}" if report["instance_id"] else "") + "\n")
    for stage in report["stages"]:
        mark = _MARKS[Verdict(stage["verdict"])]
        took = f"{stage['seconds']:>6.1f}s" if stage["seconds"] is not None else " " * 7
        line = f"  [{mark:>4}] {took}  {stage['title']}"
        if stage["detail"]:
            line += f": {stage['detail']}"
        stream.write(line + "\n")
        if stage["fix"]:
            stream.write(f"                 fix: {stage['fix']}\n")
    cleanup = report["cleanup"]
    for key in ("removed", "kept", "failed"):
        for item in cleanup.get(key, []):
            label = {"removed": "removed", "kept": "kept", "failed": "could NOT remove (delete by hand)"}[key]
            stream.write(f"  cleanup: {label}: {item}\n")
    if report["error"]:
        stream.write(f"error: {report['error']}\n")
    stream.write(("PASSED: the chain works in this account\n" if report["ok"] else
                  "FAILED: see the stages above\n") if not report["interrupted"] else
                 "INTERRUPTED: everything selftest created was cleaned up (see above)\n")

