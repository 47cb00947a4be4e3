"""`spawn config ID get|set|list`: the lifecycle settings as tags, validated with the contract."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from controller import aws
from controller.lifecycle.find import Found
from spored.contract import (
    CONFIGURABLE_TAGS,
    TAG_EXPIRES_AT,
    TAG_IDLE_CPU,
    TAG_IDLE_DISK,
    TAG_IDLE_NET,
    TAG_IDLE_TIMEOUT,
    TAG_ON_COMPLETE,
    TAG_ON_IDLE,
    TAG_PREFIX,
    TAG_TTL,
    Action,
    format_duration,
    format_timestamp,
    parse_action,
    parse_deadline,
    parse_duration,
)
from spored.errors import ValidationError, from_aws
from spored.failsafe import shutdown_behaviour


def normalize_key(key: str) -> str:
    full = key if key.startswith(TAG_PREFIX) else TAG_PREFIX + key
    if full not in CONFIGURABLE_TAGS:
        accepted = ", ".join(k.removeprefix(TAG_PREFIX) for k in CONFIGURABLE_TAGS)
        raise ValidationError("KEY", f"{key!r} is not a lifecycle setting; accepted: {accepted}")
    return full


def _number(value: str, key: str, *, low: float, high: float | None, integer: bool) -> str:
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        number = -1
    if number < low or (high is not None and number > high):
        form = "an integer" if integer else "a number"
        bound = f"{low}-{high}" if high is not None else f">= {low}"
        raise ValidationError(key, f"{value!r}; accepted: {form} {bound}")
    return str(number)


def canonical_value(key: str, value: str, now: datetime | None = None) -> str:
    """Pure given ``now``: the value as the agent will read it, or ValidationError naming the key.

    ``spawn:expires-at`` is bounded like durations: at most 366 days after ``now``."""
    if key in (TAG_TTL, TAG_IDLE_TIMEOUT):
        return format_duration(parse_duration(value, field=key))
    if key == TAG_EXPIRES_AT:
        return format_timestamp(parse_deadline(value, now or datetime.now(UTC), field=key))
    if key in (TAG_ON_COMPLETE, TAG_ON_IDLE):
        return parse_action(value, field=key).value
    if key == TAG_IDLE_CPU:
        return _number(value, key, low=0, high=100, integer=False)
    if key in (TAG_IDLE_NET, TAG_IDLE_DISK):
        return _number(value, key, low=0, high=None, integer=True)
    raise ValidationError("KEY", f"{key!r} is not a lifecycle setting")


def listing(found: Found) -> dict[str, str | None]:
    tags = found.tags
    return {k: tags.get(k) for k in CONFIGURABLE_TAGS}


def get(found: Found, key: str) -> dict[str, Any]:
    full = normalize_key(key)
    return {"instance_id": found.instance_id, "key": full, "value": found.tags.get(full)}


def set_value(found: Found, key: str, value: str) -> dict[str, Any]:
    """Validate then write. Setting spawn:ttl also rewrites spawn:expires-at (launch time + ttl),
    because an existing expires-at wins over ttl and would make the change invisible."""
    full = normalize_key(key)
    text = canonical_value(full, value)
    inst = found.instance
    if full in (TAG_ON_COMPLETE, TAG_ON_IDLE) and text != Action.TERMINATE.value:
        if inst.get("InstanceLifecycle") == "spot":
            raise ValidationError(full, f"{text!r}: one-time spot instances can only terminate")
        if text == Action.HIBERNATE.value and not (inst.get("HibernationOptions") or {}).get("Configured"):
            raise ValidationError(full, f"{found.instance_id} was not launched with hibernation; "
                                  "accepted: terminate or stop")
    tags = [{"Key": full, "Value": text}]
    if full == TAG_TTL:
        launched = inst.get("LaunchTime")
        if isinstance(launched, datetime):
            tags.append({"Key": TAG_EXPIRES_AT,
                         "Value": format_timestamp(launched + parse_duration(text, field=full))})
    ec2 = aws.client("ec2", found.region)
    result: dict[str, Any] = {"instance_id": found.instance_id}
    if full == TAG_ON_COMPLETE:
        # First the shutdown behaviour, so that an OS power-off (the agent's fallback ladder, the
        # failsafe) keeps meaning the lifecycle's action; a refusal here changes nothing.
        behaviour = shutdown_behaviour(parse_action(text, field=full))
        try:
            ec2.modify_instance_attribute(InstanceId=found.instance_id,
                                          InstanceInitiatedShutdownBehavior={"Value": behaviour})
        except Exception as exc:
            raise from_aws(exc, action=f"setting the shutdown behaviour of {found.instance_id}") from exc
        result["shutdown_behaviour"] = behaviour
    try:
        ec2.create_tags(Resources=[found.instance_id], Tags=tags)
    except Exception as exc:
        raise from_aws(exc, action=f"tagging {found.instance_id}") from exc
    result["set"] = {t["Key"]: t["Value"] for t in tags}
    return result
