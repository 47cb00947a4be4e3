"""Find spawn-managed instances by id or Name tag, querying regions concurrently.

A region that fails is reported (never silently skipped). Instances without
``spawn:managed=true`` (exactly: ``TRUE`` or ``"true "`` is not managed, as for the agent and its
IAM condition) are refused with a clear error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from controller import aws
from controller.launch.launch_flags import REGION_RE
from controller.lifecycle.view import tags_of
from spored.contract import TAG_MANAGED, TAG_NAME, is_managed, managed_problem
from spored.errors import SpawnError, ValidationError, from_aws

INSTANCE_ID_RE = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
MAX_WORKERS = 16
LIVE_STATES = ("pending", "running", "stopping", "stopped")
T = TypeVar("T")


@dataclass(frozen=True)
class Found:
    region: str
    instance: dict[str, Any]

    @property
    def instance_id(self) -> str:
        return str(self.instance["InstanceId"])

    @property
    def tags(self) -> dict[str, str]:
        return tags_of(self.instance)

    @property
    def state(self) -> str:
        return str(self.instance.get("State", {}).get("Name", ""))

    @property
    def name(self) -> str | None:
        return self.tags.get(TAG_NAME)


def per_region(regions: Sequence[str], fn: Callable[[str], T], *,
               workers: int = MAX_WORKERS) -> tuple[dict[str, T], dict[str, str]]:
    """Run ``fn(region)`` for every region, concurrently; (results, failures as messages)."""
    results: dict[str, T] = {}
    failures: dict[str, str] = {}

    def one(region: str) -> tuple[str, T | None, str | None]:
        try:
            return region, fn(region), None
        except SpawnError as exc:
            return region, None, exc.message
        except Exception as exc:
            return region, None, from_aws(exc, action=region).message

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(regions) or 1))) as pool:
        for region, value, error in pool.map(one, regions):
            if error is not None:
                failures[region] = error
            else:
                results[region] = value  # type: ignore[assignment]
    return results, failures


def validate_regions(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        for region in (v.strip() for v in value.split(",")):
            if not REGION_RE.match(region):
                raise ValidationError("--region", f"{region!r} is not a region; accepted: e.g. us-east-1")
            if region not in out:
                out.append(region)
    return out


def enabled_regions() -> list[str]:
    try:
        resp = aws.client("ec2").describe_regions(AllRegions=False)
    except Exception as exc:
        raise from_aws(exc, action="listing regions") from exc
    return sorted(str(r["RegionName"]) for r in resp.get("Regions", []))


def regions_for(region_flags: Sequence[str] | None, all_regions: bool) -> list[str]:
    if region_flags and all_regions:
        raise ValidationError("--all-regions", "give either --region or --all-regions")
    if region_flags:
        return validate_regions(region_flags)
    if all_regions:
        return enabled_regions()
    return [aws.default_region()]


def describe(region: str, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ec2 = aws.client("ec2", region)
    out: list[dict[str, Any]] = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page.get("Reservations", []):
            out.extend(reservation.get("Instances", []))
    return out


def validate_refs(refs: Sequence[str]) -> list[str]:
    if not refs:
        raise ValidationError("INSTANCE", "name at least one instance id (i-...) or Name")
    for ref in refs:
        if not ref.strip():
            raise ValidationError("INSTANCE", "empty instance reference")
        if ref.startswith("i-") and not INSTANCE_ID_RE.match(ref):
            raise ValidationError("INSTANCE", f"{ref!r} is not an instance id; accepted: i- followed "
                                  "by 8 or 17 hex digits, or a Name")
    return list(refs)


def find(refs: Sequence[str], regions: Sequence[str]) -> list[Found]:
    """Exactly one managed instance per ref (by id in any state, by Name among live ones)."""
    refs = validate_refs(refs)
    ids = [r for r in refs if INSTANCE_ID_RE.match(r)]
    names = [r for r in refs if not INSTANCE_ID_RE.match(r)]

    def lookup(region: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        if ids:
            found += describe(region, [{"Name": "instance-id", "Values": ids}])
        if names:
            found += describe(region, [{"Name": f"tag:{TAG_NAME}", "Values": names},
                                       {"Name": "instance-state-name", "Values": list(LIVE_STATES)}])
        return found

    results, failures = per_region(regions, lookup)
    every = [Found(region, inst) for region, insts in results.items() for inst in insts]
    out: list[Found] = []
    for ref in refs:
        matches = [f for f in every if (f.instance_id == ref if ref in ids else f.name == ref)]
        if not matches:
            where = ", ".join(regions) if len(regions) <= 4 else f"{len(regions)} regions"
            failed = f"; these regions could not be searched: {', '.join(sorted(failures))} " \
                     f"({next(iter(failures.values()))})" if failures else ""
            raise ValidationError("INSTANCE", f"no instance {ref!r} in {where}{failed}",
                                  hint="pass --region, or check `spawn list --all-regions`")
        if len(matches) > 1:
            listing = ", ".join(f"{m.instance_id} ({m.region}, {m.state})" for m in matches)
            raise ValidationError("INSTANCE", f"{ref!r} matches {len(matches)} instances: {listing}; "
                                  "name one by id")
        match = matches[0]
        if not is_managed(match.tags):
            problem = managed_problem(match.tags)
            why = f"{problem}" if problem else f"no {TAG_MANAGED}=true tag"
            raise ValidationError("INSTANCE", f"{match.instance_id} is not managed by spawn ({why}); "
                                  "spawn acts only on instances it launched")
        if match.instance_id not in {o.instance_id for o in out}:
            out.append(match)
    return out
