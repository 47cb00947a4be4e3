"""Pure views of an instance (a DescribeInstances entry): tags, deadline, time left, health."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from spored.contract import (
    TAG_AGENT_STATUS,
    TAG_EXPIRES_AT,
    TAG_IDLE_TIMEOUT,
    TAG_NAME,
    TAG_ON_COMPLETE,
    TAG_PAUSED_REMAINING,
    TAG_TTL,
    format_remaining,
    format_timestamp,
    parse_duration,
    parse_timestamp,
)
from spored.errors import ValidationError
from spored.permission_proof import find_reported


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    return {str(t["Key"]): str(t["Value"]) for t in instance.get("Tags", []) or []}


def _aware(moment: Any) -> datetime | None:
    if isinstance(moment, datetime):
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if isinstance(moment, str):
        try:
            parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


@dataclass(frozen=True)
class Deadline:
    at: datetime | None
    source: str  # "spawn:expires-at" | "launch time + spawn:ttl" | "paused" | "none" | "invalid: ..."
    paused_remaining: str | None = None


def deadline_of(instance: dict[str, Any]) -> Deadline:
    """The absolute deadline the agent will enforce, read the way the agent reads it:
    ``spawn:expires-at`` wins; else launch time + ``spawn:ttl``. A stopped instance with
    ``spawn:ttl-remaining`` is paused (``spawn start`` re-arms it)."""
    tags = tags_of(instance)
    state = instance.get("State", {}).get("Name")
    if TAG_PAUSED_REMAINING in tags and state in ("stopped", "stopping"):
        return Deadline(None, "paused", tags[TAG_PAUSED_REMAINING])
    try:
        if TAG_EXPIRES_AT in tags:
            return Deadline(parse_timestamp(tags[TAG_EXPIRES_AT], field=TAG_EXPIRES_AT), TAG_EXPIRES_AT)
        if TAG_TTL in tags:
            launched = _aware(instance.get("LaunchTime"))
            if launched is not None:
                return Deadline(launched + parse_duration(tags[TAG_TTL], field=TAG_TTL),
                                "launch time + spawn:ttl")
    except ValidationError as exc:
        return Deadline(None, f"invalid: {exc.message}")
    return Deadline(None, "none")


def agent_permissions(tags: dict[str, str], console: str | None = None) -> dict[str, Any] | None:
    """The agent's permission proof (spored.permission_proof): from the status tag when it carries
    one, else from the console output (the channel that works when CreateTags is denied)."""
    for source, text in (("status tag", tags.get(TAG_AGENT_STATUS, "")), ("console output", console or "")):
        reported = find_reported(text)
        if reported is not None:
            return {"verdict": str(reported.verdict), "actions": list(reported.actions), "source": source}
    return None


def agent_health(tags: dict[str, str], console: str | None = None) -> str:
    """``spawn:agent-status``; a denial the agent reported (tag or console) comes first."""
    status = tags.get(TAG_AGENT_STATUS)
    permissions = agent_permissions(tags, console)
    if permissions is not None and permissions["verdict"] != "ok":
        text = f"permissions {permissions['verdict']}: {','.join(permissions['actions'])}"
        if permissions["source"] == "status tag":
            return status or text
        return f"{text} (from the console){f'; {status}' if status else ''}"
    return status or "unknown (no status yet)"


def row(instance: dict[str, Any], region: str, now: datetime, console: str | None = None) -> dict[str, Any]:
    """One `spawn list` row; ``console``: the instance's console output, when it was read."""
    tags = tags_of(instance)
    dl = deadline_of(instance)
    if dl.at is not None:
        deadline, left = format_timestamp(dl.at), format_remaining(dl.at - now)
    elif dl.source == "paused":
        deadline, left = "paused", f"{dl.paused_remaining} (paused)"
    else:
        deadline, left = None, None
    return {
        "instance_id": instance["InstanceId"],
        "name": tags.get(TAG_NAME),
        "type": instance.get("InstanceType"),
        "state": instance.get("State", {}).get("Name"),
        "region": region,
        "deadline": deadline,
        "time_left": left,
        "idle_timeout": tags.get(TAG_IDLE_TIMEOUT),
        "on_complete": tags.get(TAG_ON_COMPLETE),
        "agent": agent_health(tags, console),
    }


LIST_COLUMNS = ("instance_id", "name", "type", "state", "region", "deadline", "time_left",
                "idle_timeout", "agent")
