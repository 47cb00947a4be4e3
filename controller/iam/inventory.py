"""Which roles spawn created, which instances use them, and cleanup of the unused ones.

Roles are global, instances regional: unless regions are given, every region DescribeRegions
lists (those enabled for the account) is searched, in parallel, so a role used in another region
is never taken for unused. Instances are matched to profiles client-side from one paginated
DescribeInstances per region (states other than terminated/shutting-down), reading each instance's
``IamInstanceProfile.Arn``: one call per region however many roles there are (and the moto server
lacks the ``iam-instance-profile.arn`` filter).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from spored.contract import MANAGED_VALUE, TAG_MANAGED

from .compose import ROLE_PATH, TAG_ROLE_KIND
from .provision import delete_role_completely

LIVE_STATES = ["pending", "running", "stopping", "stopped"]


@dataclass
class RoleInfo:
    name: str
    arn: str
    kind: str
    created: str
    profiles: list[dict[str, str]] = field(default_factory=list)
    instances: list[str] = field(default_factory=list)

    @property
    def in_use(self) -> bool:
        return bool(self.instances)

    def to_dict(self) -> dict[str, Any]:
        return {"role_name": self.name, "arn": self.arn, "kind": self.kind,
                "created": self.created, "profiles": self.profiles,
                "instances": self.instances, "in_use": self.in_use}


def _tags(iam: Any, role_name: str, listed: dict[str, Any]) -> dict[str, str]:
    tags = listed.get("Tags")
    if tags is None:  # ListRoles does not always include tags
        tags = iam.list_role_tags(RoleName=role_name)["Tags"]
    return {t["Key"]: t["Value"] for t in tags}


def all_regions() -> list[str]:
    from controller.aws import client

    return sorted(r["RegionName"] for r in client("ec2").describe_regions()["Regions"])


def _instances_in(region: str) -> dict[str, list[str]]:
    from controller.aws import client

    ec2 = client("ec2", region)
    out: dict[str, list[str]] = {}
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "instance-state-name", "Values": LIVE_STATES}])
    for page in pages:
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                arn = (instance.get("IamInstanceProfile") or {}).get("Arn")
                if arn:
                    out.setdefault(arn, []).append(f"{region}/{instance['InstanceId']}")
    return out


def instances_by_profile(regions: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Profile ARN -> ``region/instance-id`` of live instances using it, across ``regions``."""
    wanted = list(regions) if regions else all_regions()
    out: dict[str, list[str]] = {}
    with ThreadPoolExecutor(max_workers=min(8, len(wanted))) as pool:
        for found in pool.map(_instances_in, wanted):
            for arn, ids in found.items():
                out.setdefault(arn, []).extend(ids)
    return out


def list_roles(regions: Sequence[str] | None = None) -> list[RoleInfo]:
    """Roles under /spawn/ tagged spawn:managed=true, their profiles and the instances using them
    (in ``regions``; default every enabled region)."""
    from controller.aws import client

    iam = client("iam")
    used = instances_by_profile(regions)
    roles: list[RoleInfo] = []
    for page in iam.get_paginator("list_roles").paginate(PathPrefix=ROLE_PATH):
        for role in page["Roles"]:
            tags = _tags(iam, role["RoleName"], role)
            if tags.get(TAG_MANAGED) != MANAGED_VALUE:
                continue
            info = RoleInfo(name=role["RoleName"], arn=role["Arn"],
                            kind=tags.get(TAG_ROLE_KIND, "content"),
                            created=str(role.get("CreateDate", "")))
            got = iam.list_instance_profiles_for_role(RoleName=role["RoleName"])
            for profile in got["InstanceProfiles"]:
                info.profiles.append({"name": profile["InstanceProfileName"],
                                      "arn": profile["Arn"]})
                info.instances.extend(used.get(profile["Arn"], []))
            roles.append(info)
    return sorted(roles, key=lambda r: r.name)


def orphan_profiles() -> list[str]:
    """Profiles under /spawn/ with no role left in them (a crash between the two creates)."""
    from controller.aws import client

    iam = client("iam")
    out: list[str] = []
    for page in iam.get_paginator("list_instance_profiles").paginate(PathPrefix=ROLE_PATH):
        for profile in page["InstanceProfiles"]:
            if not profile.get("Roles"):
                out.append(profile["InstanceProfileName"])
    return sorted(out)


@dataclass
class CleanupPlan:
    roles: list[RoleInfo]
    kept: list[RoleInfo]
    empty_profiles: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"delete_roles": [r.to_dict() for r in self.roles],
                "keep_roles": [{"role_name": r.name,
                                "reason": f"used by {', '.join(r.instances)}" if r.in_use
                                else "named role (pass --include-named)"} for r in self.kept],
                "delete_empty_profiles": self.empty_profiles}


def cleanup_plan(regions: Sequence[str] | None = None, *,
                 include_named: bool = False) -> CleanupPlan:
    roles = list_roles(regions)
    delete = [r for r in roles if not r.in_use and (include_named or r.kind != "named")]
    kept = [r for r in roles if r not in delete]
    return CleanupPlan(delete, kept, orphan_profiles())


def cleanup(plan: CleanupPlan) -> list[str]:
    """Delete what the plan lists: roles (with inline policies, managed attachments) and profiles."""
    from controller.aws import client

    iam = client("iam")
    done: list[str] = []
    for role in plan.roles:
        done.extend(delete_role_completely(iam, role.name))
        for profile in role.profiles:
            if f"{ROLE_PATH}" in profile["arn"]:
                iam.delete_instance_profile(InstanceProfileName=profile["name"])
                done.append(f"deleted instance profile {profile['name']}")
    for name in plan.empty_profiles:
        iam.delete_instance_profile(InstanceProfileName=name)
        done.append(f"deleted empty instance profile {name}")
    return done
