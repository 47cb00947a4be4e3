"""`spawn status`: the full picture of one instance, from the API and its tags (no SSH)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from controller.lifecycle.find import Found
from controller.lifecycle.view import agent_health, agent_permissions, deadline_of, row
from spored.contract import CONFIGURABLE_TAGS, TAG_LAUNCHED_BY, TAG_ROLE


def status(found: Found, now: datetime | None = None, console: str | None = None) -> dict[str, Any]:
    """``console``: the instance's console output (GetConsoleOutput), read by the caller."""
    moment = now or datetime.now(UTC)
    inst = found.instance
    tags = found.tags
    dl = deadline_of(inst)
    base = row(inst, found.region, moment, console)
    launch = inst.get("LaunchTime")
    base.update({
        "deadline_source": dl.source,
        "paused_remaining": dl.paused_remaining,
        "launch_time": launch.isoformat() if isinstance(launch, datetime) else launch,
        "image_id": inst.get("ImageId"),
        "public_ip": inst.get("PublicIpAddress"),
        "private_ip": inst.get("PrivateIpAddress"),
        "availability_zone": inst.get("Placement", {}).get("AvailabilityZone"),
        "key_name": inst.get("KeyName"),
        "instance_profile": (inst.get("IamInstanceProfile") or {}).get("Arn"),
        "role": tags.get(TAG_ROLE),
        "launched_by": tags.get(TAG_LAUNCHED_BY),
        "spot": inst.get("InstanceLifecycle") == "spot",
        "hibernation_configured": bool((inst.get("HibernationOptions") or {}).get("Configured")),
        "metadata_options": {k: v for k, v in (inst.get("MetadataOptions") or {}).items()
                             if k in ("HttpTokens", "HttpEndpoint", "HttpPutResponseHopLimit",
                                      "InstanceMetadataTags")},
        "agent": agent_health(tags, console),
        "agent_permissions": agent_permissions(tags, console),
        "lifecycle_tags": {k: tags[k] for k in CONFIGURABLE_TAGS if k in tags},
        "tags": tags,
    })
    return base


STATUS_FIELDS = ("instance_id", "name", "state", "type", "region", "availability_zone", "image_id",
                 "public_ip", "private_ip", "launch_time", "deadline", "time_left", "deadline_source",
                 "paused_remaining", "idle_timeout", "on_complete", "agent", "spot",
                 "hibernation_configured", "key_name", "role", "instance_profile", "launched_by")
