"""`spawn list`: spawn-managed instances in one or many regions, queried concurrently."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from controller.lifecycle.find import MAX_WORKERS, describe, per_region
from controller.lifecycle.view import row
from spored.contract import MANAGED_VALUE, TAG_MANAGED
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
    results, failures = per_region(regions, lambda region: describe(region, filters), workers=workers)
    rows = [row(inst, region, moment) for region in sorted(results) for inst in
            sorted(results[region], key=lambda i: (str(i.get("LaunchTime", "")), i["InstanceId"]))]
    return rows, failures
