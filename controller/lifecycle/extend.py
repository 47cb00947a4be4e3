"""`spawn extend ID DURATION`: ``+2h`` adds to the current deadline, ``4h`` sets it from now.

Writes ``spawn:expires-at`` (the agent re-reads tags on its refresh interval, and again right before
it acts). A stopped instance whose TTL is paused gets its ``spawn:ttl-remaining`` changed instead.
Moving a deadline less than ``LATE`` (10 s) away, or already past, gives a warning (``warning`` in
``--json``): the agent may already have acted on it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from controller import aws
from controller.lifecycle.find import Found
from controller.lifecycle.view import deadline_of
from spored.contract import (
    DURATION_FORM,
    TAG_EXPIRES_AT,
    TAG_PAUSED_REMAINING,
    format_duration,
    format_remaining,
    format_timestamp,
    parse_duration,
)
from spored.errors import ValidationError, from_aws

# A deadline closer than this when it is moved may already be acted on.
LATE = timedelta(seconds=10)


def parse_extension(spec: str) -> tuple[bool, timedelta]:
    """(relative, amount): ``+2h`` -> (True, 2h); ``4h`` -> (False, 4h)."""
    text = spec.strip()
    relative = text.startswith("+")
    try:
        amount = parse_duration(text.removeprefix("+"), field="DURATION")
    except ValidationError:
        raise ValidationError("DURATION", f"{spec!r}; accepted: +DURATION to add to the deadline or "
                              f"DURATION to set it from now ({DURATION_FORM})") from None
    return relative, amount


def new_deadline(current: datetime | None, now: datetime, spec: str) -> datetime:
    """Pure. ``+D`` adds to ``current`` (or to now when there is none); ``D`` is now + D."""
    relative, amount = parse_extension(spec)
    base = current if (relative and current is not None) else now
    deadline = base + amount
    if deadline <= now:
        raise ValidationError("DURATION", f"the new deadline {format_timestamp(deadline)} is already "
                              "past; use DURATION (no +) to set it from now")
    return deadline


def new_remaining(current: timedelta, spec: str) -> timedelta:
    relative, amount = parse_extension(spec)
    return current + amount if relative else amount


def extend(found: Found, spec: str, now: datetime | None = None) -> dict[str, Any]:
    moment = now or datetime.now(UTC)
    parse_extension(spec)
    if found.state in ("shutting-down", "terminated"):
        raise ValidationError("INSTANCE", f"{found.instance_id} is {found.state}")
    ec2 = aws.client("ec2", found.region)
    dl = deadline_of(found.instance)
    if dl.source == "paused" and dl.paused_remaining:
        remaining = new_remaining(parse_duration(dl.paused_remaining, field=TAG_PAUSED_REMAINING), spec)
        value = format_duration(remaining)
        _tag(ec2, found.instance_id, TAG_PAUSED_REMAINING, value)
        return {"instance_id": found.instance_id, "region": found.region, "paused": True,
                "previous_deadline": None, "deadline": None, "time_left": None,
                "previous_remaining": dl.paused_remaining, "ttl_remaining": value, "warning": None}
    deadline = new_deadline(dl.at, moment, spec)
    _tag(ec2, found.instance_id, TAG_EXPIRES_AT, format_timestamp(deadline))
    return {"instance_id": found.instance_id, "region": found.region, "paused": False,
            "previous_deadline": format_timestamp(dl.at) if dl.at else None,
            "deadline": format_timestamp(deadline), "time_left": format_remaining(deadline - moment),
            "previous_remaining": None, "ttl_remaining": None, "warning": late_warning(dl.at, moment)}


def late_warning(previous: datetime | None, now: datetime) -> str | None:
    """Pure. A warning when the deadline being moved is less than ``LATE`` away (or past): the
    agent re-reads the tags right before it acts, but a call already on its way is not recalled."""
    if previous is None or previous - now >= LATE:
        return None
    left = previous - now
    when = f"was due {format_remaining(-left)} ago" if left < timedelta(0) else \
        f"was due in {format_remaining(left)}"
    return (f"the previous deadline {format_timestamp(previous)} {when}: the agent may already have "
            "acted on it; check with `spawn status`")


def _tag(ec2: Any, instance_id: str, key: str, value: str) -> None:
    try:
        ec2.create_tags(Resources=[instance_id], Tags=[{"Key": key, "Value": value}])
    except Exception as exc:
        raise from_aws(exc, action=f"tagging {instance_id} {key}") from exc
