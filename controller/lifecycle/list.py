"""`spawn list`: spawn-managed instances in one or many regions, queried concurrently."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from controller.lifecycle.find import MAX_WORKERS, describe, per_region
from controller.lifecycle.view import row, tags_of
from spored.contract import MANAGED_VALUE, TAG_AGENT_STATUS, TAG_MANAGED
from spored.errors import ValidationError

STATES = ("pending", "running", "stopping", "stopped", "shutting-down", "terminated")
DEFAULT_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")


def validate_states(values: Sequence[str] | None) -> tuple[str, ...]:
    if not values:
        return DEFAULT_STATES
    out: list[str] = []
    for value in values:
        for state in (v.strip() for v in value.split(",")):
            if state == "all":
                return STATES
            if state not in STATES:
                raise ValidationError("--state", f"{state!r}; accepted: {', '.join(STATES)} or all")
            out.append(state)
    return tuple(dict.fromkeys(out))


def collect(regions: Sequence[str], states: Sequence[str], *, workers: int = MAX_WORKERS,
            now: datetime | None = None) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(rows sorted by region then launch order, failures by region)."""
    moment = now or datetime.now(UTC)
    filters = [{"Name": f"tag:{TAG_MANAGED}", "Values": [MANAGED_VALUE]},
               {"Name": "instance-state-name", "Values": list(states)}]
    results, failures = per_region(regions, lambda region: _with_consoles(region, describe(region, filters)),
                                   workers=workers)
    rows = [row(inst, region, moment, console) for region in sorted(results) for inst, console in
            sorted(results[region], key=lambda ic: (str(ic[0].get("LaunchTime", "")), ic[0]["InstanceId"]))]
    return rows, failures


def _with_consoles(region: str, instances: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str | None]]:
    """Each instance with its console output, read only for a running or stopped instance whose
    agent has written no status tag: the console is then the only place a permission denial shows."""
    from controller import aws
    from controller.lifecycle.connect import console_output

    out: list[tuple[dict[str, Any], str | None]] = []
    ec2 = None
    for inst in instances:
        console = None
        state = inst.get("State", {}).get("Name")
        if state in ("running", "stopped") and TAG_AGENT_STATUS not in tags_of(inst):
            ec2 = ec2 or aws.client("ec2", region)
            console = console_output(ec2, str(inst["InstanceId"]))
        out.append((inst, console))
    return out
