"""The pure launch plan: validated flags + facts read from AWS -> RunInstances parameters.

No AWS calls, no clock reads (``now`` is passed in). The executor gathers the facts, asks for a
plan, prints it for --dry-run, or carries it out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controller.launch.launch_flags import LaunchFlags
from spored import config as agent_config
from spored import failsafe
from spored.contract import (
    MANAGED_VALUE,
    TAG_EXPIRES_AT,
    TAG_IDLE_TIMEOUT,
    TAG_LAUNCHED_BY,
    TAG_MANAGED,
    TAG_NAME,
    TAG_ON_COMPLETE,
    TAG_ROLE,
    TAG_TTL,
    format_duration,
    format_timestamp,
)
from spored.errors import ValidationError


@dataclass(frozen=True)
class InstanceTypeFacts:
    """What DescribeInstanceTypes says about the type (and DescribeImages about the AMI)."""

    instance_type: str
    architecture: str  # x86_64 | arm64
    memory_mib: int
    vcpus: int
    hibernation_supported: bool
    gpu: bool
    spot_supported: bool = True


@dataclass(frozen=True)
class ImageFacts:
    image_id: str
    root_device_name: str
    root_volume_gib: int
    description: str = ""


@dataclass(frozen=True)
class LaunchFacts:
    region: str
    type_facts: InstanceTypeFacts
    image: ImageFacts
    launched_by: str
    key_name: str | None = None
    security_group_ids: tuple[str, ...] = ()
    subnet_id: str | None = None
    profile_arn: str | None = None
    role_name: str | None = None


@dataclass(frozen=True)
class LaunchPlan:
    region: str
    name: str
    tags: dict[str, str]
    deadline: datetime | None
    config_toml: str
    failsafe_at: datetime | None = None
    run_instances: dict[str, Any] = field(default_factory=dict)


def default_name(flags: LaunchFlags) -> str:
    return flags.name or f"spawn-{flags.client_token.removeprefix('spawn-')[:8]}"


def lifecycle_tags(flags: LaunchFlags, now: datetime, *, launched_by: str,
                   role_name: str | None) -> dict[str, str]:
    tags = {TAG_MANAGED: MANAGED_VALUE, TAG_NAME: default_name(flags),
            TAG_ON_COMPLETE: flags.on_complete.value, TAG_LAUNCHED_BY: launched_by}
    if flags.ttl is not None:
        tags[TAG_TTL] = format_duration(flags.ttl)
        tags[TAG_EXPIRES_AT] = format_timestamp(now + flags.ttl)
    if flags.idle_timeout is not None:
        tags[TAG_IDLE_TIMEOUT] = format_duration(flags.idle_timeout)
    if role_name:
        tags[TAG_ROLE] = role_name
    return tags


def agent_config_for(flags: LaunchFlags, now: datetime) -> agent_config.Config:
    """The launch-time fallback copy of the lifecycle. The fallback ladder (``backstop``) and the
    failsafe keeper are on by default for every lifecycle."""
    return agent_config.Config(
        lifecycle=agent_config.Lifecycle(
            ttl=flags.ttl,
            expires_at=(now + flags.ttl) if flags.ttl is not None else None,
            idle_timeout=flags.idle_timeout,
            on_complete=flags.on_complete,
        ),
    )


def failsafe_time(flags: LaunchFlags, now: datetime) -> datetime | None:
    """When the OS powers the instance off if no agent ever manages it (spored.failsafe):
    the deadline + grace for TTL lifecycles, launch + idle timeout + grace without a TTL, none
    only with ``--no-timeout``. The shutdown behaviour makes it the lifecycle's action."""
    deadline = now + flags.ttl if flags.ttl is not None else None
    return failsafe.failsafe_at(deadline=deadline, idle_timeout=flags.idle_timeout, now=now)


def check_type(flags: LaunchFlags, facts: InstanceTypeFacts) -> None:
    if flags.hibernation_configured and not facts.hibernation_supported:
        flag = "--hibernate" if flags.hibernate else "--on-complete"
        raise ValidationError(flag, f"{facts.instance_type} does not support hibernation "
                              "(DescribeInstanceTypes HibernationSupported=false); accepted: a type "
                              "that supports it, or --on-complete terminate|stop")
    if flags.spot and not facts.spot_supported:
        raise ValidationError("--spot", f"{facts.instance_type} is not offered as spot")


def build(flags: LaunchFlags, facts: LaunchFacts, user_data: bytes, now: datetime) -> LaunchPlan:
    """RunInstances parameters for this launch. Tags go through TagSpecifications only."""
    check_type(flags, facts.type_facts)
    tags = lifecycle_tags(flags, now, launched_by=facts.launched_by, role_name=facts.role_name)
    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    params: dict[str, Any] = {
        "ImageId": facts.image.image_id,
        "InstanceType": flags.instance_type,
        "MinCount": flags.count,
        "MaxCount": flags.count,
        "ClientToken": flags.client_token,
        "UserData": user_data,
        "MetadataOptions": {
            "HttpTokens": "required",
            "HttpEndpoint": "enabled",
            "HttpPutResponseHopLimit": flags.imds_hop_limit,
            "InstanceMetadataTags": "enabled",
        },
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tag_list},
            {"ResourceType": "volume", "Tags": tag_list},
        ],
        # An OS power-off (the fallback ladder, the failsafe) then means the lifecycle's action.
        "InstanceInitiatedShutdownBehavior": failsafe.shutdown_behaviour(flags.on_complete),
    }
    if facts.key_name:
        params["KeyName"] = facts.key_name
    if facts.subnet_id:
        params["SubnetId"] = facts.subnet_id
    if facts.security_group_ids:
        params["SecurityGroupIds"] = list(facts.security_group_ids)
    if facts.profile_arn:
        params["IamInstanceProfile"] = {"Arn": facts.profile_arn}
    if flags.spot:
        spot: dict[str, Any] = {"SpotInstanceType": "one-time",
                                "InstanceInterruptionBehavior": "terminate"}
        if flags.spot_max_price:
            spot["MaxPrice"] = flags.spot_max_price
        params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot}
    if flags.hibernation_configured:
        params["HibernationOptions"] = {"Configured": True}
        # Hibernation needs an encrypted root volume large enough for the OS plus RAM.
        ram_gib = math.ceil(facts.type_facts.memory_mib / 1024)
        params["BlockDeviceMappings"] = [{
            "DeviceName": facts.image.root_device_name,
            "Ebs": {"Encrypted": True, "VolumeType": "gp3", "DeleteOnTermination": True,
                    "VolumeSize": facts.image.root_volume_gib + ram_gib},
        }]
    deadline = now + flags.ttl if flags.ttl is not None else None
    toml = agent_config.render(agent_config_for(flags, now))
    return LaunchPlan(region=facts.region, name=tags[TAG_NAME], tags=tags, deadline=deadline,
                      config_toml=toml, failsafe_at=failsafe_time(flags, now), run_instances=params)


def printable(params: dict[str, Any]) -> dict[str, Any]:
    """RunInstances parameters for display: user-data summarized by size."""
    shown = dict(params)
    if isinstance(shown.get("UserData"), bytes):
        shown["UserData"] = f"<{len(shown['UserData'])} bytes, shown below>"
    return shown
