"""The VPC/subnet to launch into and spawn's security group: SSH (port 22) only, only from the
CIDRs asked for; no ingress at all when there is no key to connect with.

The group's name is derived from its rules, so it is created once per VPC and reused.
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


def find_group(ec2: Any, vpc_id: str, cidrs: tuple[str, ...]) -> str | None:
    resp = ec2.describe_security_groups(Filters=[
        {"Name": "group-name", "Values": [group_name(cidrs)]},
        {"Name": "vpc-id", "Values": [vpc_id]},
    ])
    groups = resp.get("SecurityGroups", [])
    return str(groups[0]["GroupId"]) if groups else None


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
