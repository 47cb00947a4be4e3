"""The VPC/subnet to launch into and spawn's security group: SSH (port 22) only, only from the
CIDRs asked for; no ingress at all when there is no key to connect with.

The group's name is derived from its rules, so it is created once per VPC and reused. Anyone in
the account can predict that name and create a group under it first (with every port open, say).
So a group found under spawn's name is reused only if spawn's tags are on it (``spawn:managed`` =
``true`` and ``Name`` = the group name, as spawn tags it at creation) and its ingress is exactly
what spawn would set: one TCP/22 permission from exactly the asked-for CIDRs, nothing else (no
other ports or protocols, no group, prefix-list or other-CIDR sources). Anything else stops the
launch with exit 2, naming the group and what differs. The tags only show intent (whoever may tag
may forge them); the ingress check is what keeps the instance out of a group that admits others.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

from spored.errors import ValidationError, aws_error_code, from_aws


def group_name(cidrs: tuple[str, ...]) -> str:
    """Pure: content-derived name for the rule set."""
    if not cidrs:
        return "spawn-no-ingress"
    return "spawn-ssh-" + hashlib.sha256(",".join(sorted(cidrs)).encode()).hexdigest()[:12]


def ingress_permissions(cidrs: tuple[str, ...]) -> list[dict[str, Any]]:
    """Pure: one TCP/22 permission with each CIDR in its IPv4 or IPv6 list."""
    if not cidrs:
        return []
    v4 = [{"CidrIp": c, "Description": "spawn ssh"} for c in cidrs
          if ipaddress.ip_network(c).version == 4]
    v6 = [{"CidrIpv6": c, "Description": "spawn ssh"} for c in cidrs
          if ipaddress.ip_network(c).version == 6]
    perm: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}
    if v4:
        perm["IpRanges"] = v4
    if v6:
        perm["Ipv6Ranges"] = v6
    return [perm]


def resolve_vpc(ec2: Any, subnet: str | None) -> tuple[str, str | None]:
    """(vpc id, subnet id or None): the subnet's VPC, or the region's default VPC (reads)."""
    if subnet:
        try:
            subnets = ec2.describe_subnets(SubnetIds=[subnet]).get("Subnets", [])
        except Exception as exc:
            if aws_error_code(exc).startswith("InvalidSubnetID"):
                raise ValidationError("--subnet", f"{subnet} was not found in this region") from None
            raise from_aws(exc, action="describing the subnet") from exc
        if not subnets:
            raise ValidationError("--subnet", f"{subnet} was not found in this region")
        return str(subnets[0]["VpcId"]), subnet
    try:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}]).get("Vpcs", [])
    except Exception as exc:
        raise from_aws(exc, action="finding the default VPC") from exc
    if not vpcs:
        raise ValidationError("--subnet", "this region has no default VPC; accepted: --subnet subnet-...")
    return str(vpcs[0]["VpcId"]), None


def require_groups(ec2: Any, group_ids: tuple[str, ...]) -> None:
    try:
        ec2.describe_security_groups(GroupIds=list(group_ids))
    except Exception as exc:
        if aws_error_code(exc).startswith("InvalidGroup"):
            raise ValidationError("--security-group", f"not found in this region: {', '.join(group_ids)}") \
                from None
        raise from_aws(exc, action="describing security groups") from exc


def _rules(permissions: list[dict[str, Any]]) -> set[tuple[str, Any, Any, str, str]]:
    """Pure: a permission list as comparable (protocol, from, to, source kind, source) rows."""
    rows: set[tuple[str, Any, Any, str, str]] = set()
    for perm in permissions:
        head = (str(perm.get("IpProtocol")), perm.get("FromPort"), perm.get("ToPort"))
        sources = ([("cidr", r["CidrIp"]) for r in perm.get("IpRanges", [])]
                   + [("cidr6", r["CidrIpv6"]) for r in perm.get("Ipv6Ranges", [])]
                   + [("group", str(g.get("GroupId") or g.get("GroupName")))
                      for g in perm.get("UserIdGroupPairs", [])]
                   + [("prefix-list", p["PrefixListId"]) for p in perm.get("PrefixListIds", [])])
        rows.update((*head, kind, source) for kind, source in (sources or [("none", "")]))
    return rows


def group_problems(group: dict[str, Any], cidrs: tuple[str, ...]) -> list[str]:
    """Pure: why a group found under spawn's name is not one spawn would use ([] = fine)."""
    problems = []
    tags = {t["Key"]: t["Value"] for t in group.get("Tags", [])}
    name = group_name(cidrs)
    if tags.get("spawn:managed") != "true" or tags.get("Name") != name:
        problems.append(f"it lacks spawn's tags (spawn:managed=true, Name={name})")
    want, have = _rules(ingress_permissions(cidrs)), _rules(group.get("IpPermissions", []))
    extra, missing = sorted(have - want, key=str), sorted(want - have, key=str)
    if extra:
        problems.append("it admits more than spawn would: " + "; ".join(map(_describe, extra)))
    if missing:
        problems.append("it lacks spawn's rule: " + "; ".join(map(_describe, missing)))
    return problems


def _describe(rule: tuple[str, Any, Any, str, str]) -> str:
    proto, low, high, kind, source = rule
    what = ("all traffic" if proto == "-1" else
            f"{proto} port {low}" if low == high else f"{proto} ports {low}-{high}")
    return f"{what} from {kind if kind in ('group', 'prefix-list') else ''} {source}".replace("  ", " ")


def find_group(ec2: Any, vpc_id: str, cidrs: tuple[str, ...]) -> str | None:
    """The id of spawn's group for these CIDRs in this VPC, if it exists and checks out (a read);
    a group under that name that spawn would not have made raises ValidationError."""
    try:
        resp = ec2.describe_security_groups(Filters=[
            {"Name": "group-name", "Values": [group_name(cidrs)]},
            {"Name": "vpc-id", "Values": [vpc_id]},
        ])
    except Exception as exc:
        raise from_aws(exc, action="describing security groups") from exc
    groups = resp.get("SecurityGroups", [])
    if not groups:
        return None
    group = groups[0]
    problems = group_problems(group, cidrs)
    if problems:
        raise ValidationError("--ssh-from", f"security group {group_name(cidrs)} ({group['GroupId']}) in "
                              f"{vpc_id} is not one spawn made: {'; '.join(problems)}. spawn will not put "
                              "your instance in it and created nothing. If nobody you trust made it, delete "
                              "it; or pass --security-group with a group of your own")
    return str(group["GroupId"])


def ensure_group(ec2: Any, vpc_id: str, cidrs: tuple[str, ...]) -> tuple[str, bool]:
    """(group id, created by this call). Safe when two launches race to create it."""
    existing = find_group(ec2, vpc_id, cidrs)
    if existing:
        return existing, False
    name = group_name(cidrs)
    description = ("spawn: SSH from " + " ".join(sorted(cidrs))) if cidrs else "spawn: no ingress"
    try:
        group_id = str(ec2.create_security_group(
            GroupName=name, Description=description[:255], VpcId=vpc_id,
            TagSpecifications=[{"ResourceType": "security-group",
                                "Tags": [{"Key": "spawn:managed", "Value": "true"},
                                         {"Key": "Name", "Value": name}]}],
        )["GroupId"])
    except Exception as exc:
        if aws_error_code(exc) == "InvalidGroup.Duplicate":
            found = find_group(ec2, vpc_id, cidrs)
            if found:
                return found, False
        raise from_aws(exc, action=f"creating security group {name}") from exc
    permissions = ingress_permissions(cidrs)
    if permissions:
        try:
            ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=permissions)
        except Exception as exc:
            ec2.delete_security_group(GroupId=group_id)
            raise from_aws(exc, action=f"allowing SSH in {name}") from exc
    return group_id, True


def delete_group(ec2: Any, group_id: str) -> None:
    ec2.delete_security_group(GroupId=group_id)
