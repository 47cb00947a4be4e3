"""Tags -> the effective lifecycle policy (pure).

Precedence for every setting: the tag when it parses; when a tag is present but invalid, the last
good value of that tag (reported as a problem), else the launch-time fallback from the config file.
When the tags could not be read at all, the last good tags are used, then the config fallback.
Tags that were read and are simply absent mean "not set". Nothing here ever turns an unreadable or
invalid value into "no TTL".

``spawn:managed`` is the exception: managed means exactly ``true`` (the IAM condition's
StringEquals is case-sensitive). Any other present value is reported and means unmanaged, never
"the last good value"; only unreadable tags fall back to the last good ``spawn:managed``.

Deadline: ``spawn:expires-at`` if valid (a timestamp at most 366 days after ``now``), else launch
time + ``spawn:ttl``. The launch time is the identity document's ``pendingTime`` (the last launch or
start; EC2's LaunchTime moves on start too, and the controller rewrites ``spawn:expires-at`` when it
starts an instance).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from spored.config import Lifecycle
from spored.contract import (
    MANAGED_VALUE,
    TAG_EXPIRES_AT,
    TAG_IDLE_CPU,
    TAG_IDLE_DISK,
    TAG_IDLE_NET,
    TAG_IDLE_TIMEOUT,
    TAG_MANAGED,
    TAG_ON_COMPLETE,
    TAG_ON_IDLE,
    TAG_TTL,
    Action,
    managed_problem,
    parse_action,
    parse_deadline,
    parse_duration,
)
from spored.errors import ValidationError

T = TypeVar("T")

DEFAULT_CPU_PERCENT = 5.0
DEFAULT_NET_BPS = 10240.0
DEFAULT_DISK_BPS = 102400.0
DEFAULT_GPU_PERCENT = 5.0

@dataclass(frozen=True)
class Thresholds:
    cpu_percent: float = DEFAULT_CPU_PERCENT
    net_bytes_per_sec: float = DEFAULT_NET_BPS
    disk_bytes_per_sec: float = DEFAULT_DISK_BPS
    gpu_percent: float = DEFAULT_GPU_PERCENT


@dataclass(frozen=True)
class Policy:
    # True only when spawn:managed=true was read (now, or last good when tags are unreadable).
    managed: bool
    deadline: datetime | None
    deadline_source: str
    idle_timeout: timedelta | None
    on_complete: Action
    on_idle: Action
    thresholds: Thresholds
    # Human-readable reasons a tag was not used.
    problems: tuple[str, ...]
    # The lifecycle tags that parsed (to keep as "last good").
    valid_tags: dict[str, str]
    # Where the values came from: "tags", "last-good" or "config".
    source: str


def _check(key: str, raw: str, now: datetime) -> object:
    if key == TAG_MANAGED:
        return raw == MANAGED_VALUE
    if key in (TAG_TTL, TAG_IDLE_TIMEOUT):
        return parse_duration(raw, field=key)
    if key == TAG_EXPIRES_AT:
        return parse_deadline(raw, now, field=key)
    if key in (TAG_ON_COMPLETE, TAG_ON_IDLE):
        return parse_action(raw, field=key)
    try:
        number = float(raw)
    except ValueError:
        raise ValidationError(key, f"{raw!r} is not a number") from None
    upper = 100.0 if key == TAG_IDLE_CPU else float("inf")
    if not 0 <= number <= upper:
        raise ValidationError(key, f"{raw!r} is out of range (0-{upper:g})")
    return number


def resolve(tags: dict[str, str] | None, lifecycle: Lifecycle, launch_time: datetime | None,
            last_good: dict[str, str], now: datetime) -> Policy:
    """``tags`` None = unreadable. ``last_good`` = lifecycle tags that parsed at an earlier read.
    ``now`` bounds ``spawn:expires-at`` (at most 366 days ahead)."""
    problems: list[str] = []
    valid: dict[str, str] = {}
    source = "tags"
    unreadable = tags is None
    if tags is None:
        source = "last-good" if last_good else "config"
        tags = dict(last_good)
        problems.append("tags unreadable: using the last good values and the launch-time config")

    def pick(key: str, parse: Callable[[object], T], fallback: T | None) -> tuple[T | None, str]:
        raw = tags.get(key)
        if raw is not None:
            try:
                value = parse(_check(key, raw, now))
                valid[key] = raw
                return value, key
            except ValidationError as exc:
                problems.append(f"invalid tag {exc.message}")
                good = last_good.get(key)
                if good is not None and good != raw:
                    try:
                        return parse(_check(key, good, now)), f"{key} (last good)"
                    except ValidationError:
                        pass  # the last good value no longer passes (e.g. a bound): the fallback
                return fallback, "config"
        if unreadable:
            return fallback, "config"
        return None, ""

    raw_managed = tags.get(TAG_MANAGED)
    problem = managed_problem(tags)
    if problem is not None:
        problems.append(problem)
    managed = raw_managed == MANAGED_VALUE
    if problem is None and raw_managed is not None:
        valid[TAG_MANAGED] = raw_managed
    expires, exp_src = pick(TAG_EXPIRES_AT, _as(datetime), lifecycle.expires_at)
    ttl, ttl_src = pick(TAG_TTL, _as(timedelta), lifecycle.ttl)
    deadline: datetime | None = None
    deadline_source = "none"
    if expires is not None:
        deadline, deadline_source = expires, exp_src
    elif ttl is not None and launch_time is not None:
        deadline, deadline_source = launch_time + ttl, f"launch time + {ttl_src}"
    elif ttl is not None:
        problems.append("launch time unknown: the TTL cannot be placed yet")

    idle_timeout, _ = pick(TAG_IDLE_TIMEOUT, _as(timedelta), lifecycle.idle_timeout)
    picked_complete, _ = pick(TAG_ON_COMPLETE, _as(Action), lifecycle.on_complete)
    on_complete = picked_complete or lifecycle.on_complete
    on_idle, _ = pick(TAG_ON_IDLE, _as(Action), on_complete)
    cpu, _ = pick(TAG_IDLE_CPU, _as(float), DEFAULT_CPU_PERCENT)
    net, _ = pick(TAG_IDLE_NET, _as(float), DEFAULT_NET_BPS)
    disk, _ = pick(TAG_IDLE_DISK, _as(float), DEFAULT_DISK_BPS)
    return Policy(
        managed=bool(managed),
        deadline=deadline,
        deadline_source=deadline_source,
        idle_timeout=idle_timeout,
        on_complete=on_complete,
        on_idle=on_idle or on_complete,
        thresholds=Thresholds(
            cpu_percent=DEFAULT_CPU_PERCENT if cpu is None else cpu,
            net_bytes_per_sec=DEFAULT_NET_BPS if net is None else net,
            disk_bytes_per_sec=DEFAULT_DISK_BPS if disk is None else disk,
        ),
        problems=tuple(problems),
        valid_tags=valid,
        source=source,
    )


def _as(kind: type[T]) -> Callable[[object], T]:
    def convert(value: object) -> T:
        if not isinstance(value, kind):
            raise TypeError(f"expected {kind.__name__}")
        return value
    return convert
