"""stop / hibernate / start / terminate, through the API. Stop and hibernate keep the remaining
TTL in ``spawn:ttl-remaining`` (and drop ``spawn:expires-at``, so a start from the console does
not find a deadline that passed while the instance was off); ``spawn start`` re-arms it as
``spawn:expires-at = now + remaining``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from controller import aws
from controller.lifecycle.find import Found
from controller.lifecycle.view import deadline_of
from spored.contract import (
    TAG_EXPIRES_AT,
    TAG_PAUSED_REMAINING,
    format_duration,
    format_timestamp,
    parse_duration,
)
from spored.errors import ValidationError, from_aws


def terminate(found: Sequence[Found]) -> list[dict[str, Any]]:
    by_region: dict[str, list[str]] = defaultdict(list)
    for f in found:
        by_region[f.region].append(f.instance_id)
    out: list[dict[str, Any]] = []
    for region, ids in by_region.items():
        try:
            resp = aws.client("ec2", region).terminate_instances(InstanceIds=ids)
        except Exception as exc:
            raise from_aws(exc, action=f"terminating {', '.join(ids)}") from exc
        out += [{"instance_id": c["InstanceId"], "region": region,
                 "previous_state": c["PreviousState"]["Name"], "state": c["CurrentState"]["Name"]}
                for c in resp.get("TerminatingInstances", [])]
    return out


def stop(found: Found, *, hibernate: bool = False, now: datetime | None = None) -> dict[str, Any]:
    moment = now or datetime.now(UTC)
    verb = "hibernate" if hibernate else "stop"
    if found.state != "running":
        raise ValidationError("INSTANCE", f"{found.instance_id} is {found.state}; only a running "
                              f"instance can {verb}")
    if found.instance.get("InstanceLifecycle") == "spot":
        raise ValidationError("INSTANCE", f"{found.instance_id} is a one-time spot instance; it can "
                              "only be terminated")
    if hibernate and not (found.instance.get("HibernationOptions") or {}).get("Configured"):
        raise ValidationError("INSTANCE", f"{found.instance_id} was not launched with hibernation "
                              "(spawn launch --hibernate); use spawn stop")
    ec2 = aws.client("ec2", found.region)
    dl = deadline_of(found.instance)
    tags = found.tags
    remaining = None
    if dl.at is not None and dl.at > moment:
        remaining = format_duration(dl.at - moment)
        try:
            ec2.create_tags(Resources=[found.instance_id],
                            Tags=[{"Key": TAG_PAUSED_REMAINING, "Value": remaining}])
            if TAG_EXPIRES_AT in tags:
                ec2.delete_tags(Resources=[found.instance_id], Tags=[{"Key": TAG_EXPIRES_AT}])
        except Exception as exc:
            raise from_aws(exc, action=f"saving the remaining TTL of {found.instance_id}") from exc
    try:
        resp = ec2.stop_instances(InstanceIds=[found.instance_id], Hibernate=hibernate)
    except Exception as exc:
        if remaining is not None:  # put the deadline back as it was
            with suppress(Exception):
                if TAG_EXPIRES_AT in tags:
                    ec2.create_tags(Resources=[found.instance_id],
                                    Tags=[{"Key": TAG_EXPIRES_AT, "Value": tags[TAG_EXPIRES_AT]}])
                ec2.delete_tags(Resources=[found.instance_id], Tags=[{"Key": TAG_PAUSED_REMAINING}])
        raise from_aws(exc, action=f"{verb} {found.instance_id}") from exc
    change = resp["StoppingInstances"][0]
    return {"instance_id": found.instance_id, "region": found.region, "action": verb,
            "state": change["CurrentState"]["Name"], "ttl_remaining": remaining, "deadline": None}


def start(found: Found, *, now: datetime | None = None) -> dict[str, Any]:
    moment = now or datetime.now(UTC)
    if found.state != "stopped":
        raise ValidationError("INSTANCE", f"{found.instance_id} is {found.state}; only a stopped "
                              "instance can start")
    ec2 = aws.client("ec2", found.region)
    tags = found.tags
    deadline = None
    if TAG_PAUSED_REMAINING in tags:
        remaining = parse_duration(tags[TAG_PAUSED_REMAINING], field=TAG_PAUSED_REMAINING)
        deadline = format_timestamp(moment + remaining)
        try:
            ec2.create_tags(Resources=[found.instance_id],
                            Tags=[{"Key": TAG_EXPIRES_AT, "Value": deadline}])
            ec2.delete_tags(Resources=[found.instance_id], Tags=[{"Key": TAG_PAUSED_REMAINING}])
        except Exception as exc:
            raise from_aws(exc, action=f"re-arming the deadline of {found.instance_id}") from exc
    try:
        resp = ec2.start_instances(InstanceIds=[found.instance_id])
    except Exception as exc:
        if deadline is not None:
            with suppress(Exception):
                ec2.create_tags(Resources=[found.instance_id],
                                Tags=[{"Key": TAG_PAUSED_REMAINING, "Value": tags[TAG_PAUSED_REMAINING]}])
                ec2.delete_tags(Resources=[found.instance_id], Tags=[{"Key": TAG_EXPIRES_AT}])
        raise from_aws(exc, action=f"starting {found.instance_id}") from exc
    change = resp["StartingInstances"][0]
    return {"instance_id": found.instance_id, "region": found.region, "action": "start",
            "state": change["CurrentState"]["Name"], "ttl_remaining": None, "deadline": deadline}
