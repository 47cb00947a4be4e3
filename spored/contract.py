"""The contract between the controller and the agent: tag keys, durations, actions, reason codes.

Owned by the agent, imported by the controller. Pure: no AWS, no HTTP, no I/O.
The README's tag and duration tables are generated from this module (see ``docs_tables``).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from spored.errors import ValidationError

# ---------------------------------------------------------------------------
# Tag keys
# ---------------------------------------------------------------------------
TAG_PREFIX = "spawn:"
TAG_MANAGED = "spawn:managed"
TAG_TTL = "spawn:ttl"
TAG_EXPIRES_AT = "spawn:expires-at"
TAG_IDLE_TIMEOUT = "spawn:idle-timeout"
TAG_ON_COMPLETE = "spawn:on-complete"
TAG_ON_IDLE = "spawn:on-idle"
TAG_LAUNCHED_BY = "spawn:launched-by"
TAG_ROLE = "spawn:role"
TAG_PAUSED_REMAINING = "spawn:ttl-remaining"
TAG_AGENT_STATUS = "spawn:agent-status"
TAG_IDLE_CPU = "spawn:idle-cpu-percent"
TAG_IDLE_NET = "spawn:idle-net-bytes-per-sec"
TAG_IDLE_DISK = "spawn:idle-disk-bytes-per-sec"
TAG_NAME = "Name"

MANAGED_VALUE = "true"


@dataclass(frozen=True)
class TagSpec:
    key: str
    value_format: str
    written_by: str
    read_by: str
    meaning: str


TAGS: tuple[TagSpec, ...] = (
    TagSpec(TAG_MANAGED, "`true`", "spawn launch", "spored, spawn list",
            "The agent acts only on instances carrying `spawn:managed=true` (exactly: `TRUE` is "
            "reported, not obeyed)."),
    TagSpec(TAG_TTL, "duration", "spawn launch, spawn config", "spored",
            "Time to live, counted from the instance's launch time."),
    TagSpec(TAG_EXPIRES_AT, "UTC timestamp `YYYY-MM-DDTHH:MM:SSZ`",
            "spawn launch, spawn extend, spawn start", "spored, spawn list",
            "Absolute deadline, at most 366 days ahead; wins over `spawn:ttl` when present."),
    TagSpec(TAG_IDLE_TIMEOUT, "duration", "spawn launch, spawn config", "spored",
            "How long the instance may be idle before the on-idle action."),
    TagSpec(TAG_ON_COMPLETE, "`terminate` | `stop` | `hibernate`", "spawn launch, spawn config",
            "spored", "What to do at TTL, on completion and on idle (default `terminate`)."),
    TagSpec(TAG_ON_IDLE, "`terminate` | `stop` | `hibernate`", "spawn config", "spored",
            "Overrides `spawn:on-complete` for the idle action only."),
    TagSpec(TAG_IDLE_CPU, "number 0-100", "spawn config", "spored",
            "CPU busy percent under which the instance counts as idle (default 5)."),
    TagSpec(TAG_IDLE_NET, "integer bytes/s", "spawn config", "spored",
            "Network bytes/s (all interfaces but lo) under which it counts as idle (default 10240)."),
    TagSpec(TAG_IDLE_DISK, "integer bytes/s", "spawn config", "spored",
            "Disk bytes/s (whole devices) under which it counts as idle (default 102400)."),
    TagSpec(TAG_PAUSED_REMAINING, "duration", "spawn stop, spawn hibernate", "spawn start",
            "TTL left when the instance was stopped; `spawn start` re-arms it."),
    TagSpec(TAG_LAUNCHED_BY, "IAM ARN", "spawn launch", "people",
            "Who launched the instance."),
    TagSpec(TAG_ROLE, "role name", "spawn launch", "spawn iam roles",
            "The instance role spawn attached."),
    TagSpec(TAG_AGENT_STATUS, "`<state> <UTC timestamp>`", "spored (own instance only)",
            "spawn list, spawn status", "Agent health, written only when its state changes."),
)

# Keys the agent may write on its own instance (the agent policy's aws:TagKeys list).
AGENT_WRITABLE_TAGS: tuple[str, ...] = (TAG_AGENT_STATUS,)

# Lifecycle keys `spawn config` may set.
CONFIGURABLE_TAGS: tuple[str, ...] = (
    TAG_TTL, TAG_EXPIRES_AT, TAG_IDLE_TIMEOUT, TAG_ON_COMPLETE, TAG_ON_IDLE,
    TAG_IDLE_CPU, TAG_IDLE_NET, TAG_IDLE_DISK,
)


# ---------------------------------------------------------------------------
# Durations
# ---------------------------------------------------------------------------
DURATION_FORM = "one or more <integer><unit> with units s, m, h, d, w (e.g. 90s, 30m, 1h30m, 2d, 1w)"
MAX_DURATION = timedelta(days=366)
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_RE = re.compile(r"^(?:[0-9]+[smhdw])+$")  # ASCII digits only: "١h" is not a duration
_PART_RE = re.compile(r"([0-9]+)([smhdw])")


def parse_duration(value: str, *, field: str = "duration") -> timedelta:
    """Parse the one duration grammar both programs share.

    Raises ValidationError naming ``field``, the value and the accepted form.
    """
    text = value.strip() if isinstance(value, str) else value
    if not isinstance(text, str) or not _DURATION_RE.match(text):
        raise ValidationError(field, f"{value!r} is not a duration; accepted: {DURATION_FORM}")
    total = sum(int(n) * _UNIT_SECONDS[u] for n, u in _PART_RE.findall(text))
    if total <= 0:
        raise ValidationError(field, f"{value!r} must be positive; accepted: {DURATION_FORM}")
    if total > MAX_DURATION.total_seconds():
        raise ValidationError(field, f"{value!r} exceeds the maximum of 366 days")
    return timedelta(seconds=total)


def format_duration(delta: timedelta) -> str:
    """Canonical form: largest units first, zero parts omitted (``1h30m``, ``2d``)."""
    seconds = int(delta.total_seconds())
    if seconds <= 0:
        raise ValueError("durations are positive")
    parts: list[str] = []
    for unit, size in _UNIT_SECONDS.items():
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def format_remaining(delta: timedelta) -> str:
    """Human form for a remaining time, which may be zero or negative (``-5m``)."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    return sign + format_duration(timedelta(seconds=abs(seconds)))


# ---------------------------------------------------------------------------
# Timestamps: one canonical UTC form
# ---------------------------------------------------------------------------
TIMESTAMP_FORM = "UTC RFC 3339 with Z, e.g. 2026-11-28T17:00:00Z"
_TS_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z$")


def parse_timestamp(value: str, *, field: str = "timestamp") -> datetime:
    if not isinstance(value, str) or not _TS_RE.match(value.strip()):
        raise ValidationError(field, f"{value!r} is not a timestamp; accepted: {TIMESTAMP_FORM}")
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).astimezone(UTC)
    except ValueError as exc:
        raise ValidationError(field, f"{value!r} is not a valid date: {exc}") from exc


MAX_AHEAD = MAX_DURATION


def check_deadline(moment: datetime, now: datetime, *, field: str = TAG_EXPIRES_AT) -> datetime:
    """``moment`` as a deadline: at most ``MAX_AHEAD`` (366 days, like durations) after ``now``.

    A year-3000 deadline is no deadline at all; it is refused like a 400-day duration.
    """
    latest = now + MAX_AHEAD
    if moment > latest:
        raise ValidationError(field, f"{format_timestamp(moment)} is more than 366 days ahead; accepted: "
                              f"a timestamp up to {format_timestamp(latest)} ({TIMESTAMP_FORM})")
    return moment


def parse_deadline(value: str, now: datetime, *, field: str = TAG_EXPIRES_AT) -> datetime:
    """``parse_timestamp`` plus the 366-day bound of ``check_deadline``."""
    return check_deadline(parse_timestamp(value, field=field), now, field=field)


def format_timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("naive datetimes are not timestamps")
    # isoformat, not strftime("%Y"): glibc writes year 999 as "999", which parse_timestamp refuses.
    return moment.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


# ---------------------------------------------------------------------------
# Actions and reasons
# ---------------------------------------------------------------------------
class Action(enum.StrEnum):
    TERMINATE = "terminate"
    STOP = "stop"
    HIBERNATE = "hibernate"


ACTION_FORM = "terminate, stop or hibernate"


def parse_action(value: str, *, field: str = TAG_ON_COMPLETE) -> Action:
    try:
        return Action(value.strip().lower())
    except (ValueError, AttributeError):
        raise ValidationError(field, f"{value!r} is not an action; accepted: {ACTION_FORM}") from None


class Reason(enum.StrEnum):
    """Why the agent acts. Stable codes: logs, status and the README use them."""

    SPOT_INTERRUPTION = "spot-interruption"
    REBALANCE = "rebalance-recommendation"
    TTL_EXPIRED = "ttl-expired"
    COMPLETED = "completed"
    IDLE = "idle"


REASON_DESCRIPTIONS: dict[Reason, str] = {
    Reason.SPOT_INTERRUPTION: "AWS sent a spot interruption notice; the pre-stop hook runs, AWS reclaims.",
    Reason.REBALANCE: "AWS recommends rebalancing; the pre-stop hook runs once, nothing is ended.",
    Reason.TTL_EXPIRED: "The absolute deadline passed.",
    Reason.COMPLETED: "The workload said it is done (`spored complete`).",
    Reason.IDLE: "Every idle signal stayed under its threshold for the idle timeout.",
}


def is_managed(tags: dict[str, str]) -> bool:
    """Managed means exactly ``true``, as the agent policy's IAM condition compares it.

    StringEquals is "exact matching, case sensitive" (AWS IAM User Guide, "IAM JSON policy
    elements: Condition operators", String condition operators): IAM denies ``TRUE`` or
    ``"true "``, so the agent must not act on them either.
    """
    return tags.get(TAG_MANAGED) == MANAGED_VALUE


def managed_problem(tags: dict[str, str]) -> str | None:
    """A ``spawn:managed`` value that is neither ``true`` nor ``false``: reported, never obeyed."""
    value = tags.get(TAG_MANAGED)
    if value is None or value in (MANAGED_VALUE, "false"):
        return None
    return (f"{TAG_MANAGED}: {value!r} is not exactly {MANAGED_VALUE!r}: the instance is treated as "
            f"unmanaged (accepted: {MANAGED_VALUE} or false, lower case, no spaces)")


# Characters EC2 accepts in tag keys when tags are exposed through instance metadata.
METADATA_TAG_KEY_RE = re.compile(r"^[0-9a-zA-Z\-_+=,.@:]{1,128}$")
