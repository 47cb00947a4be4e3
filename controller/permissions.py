"""Declared permissions: every AWS operation spawn and its agent make, and the IAM actions it needs.

The cloud-custodian habit: code paths declare what they call, one line each::

    declare("launch", "ec2", "RunInstances", "ec2:RunInstances", "iam:PassRole", "ec2:CreateTags")

``service`` and ``operation`` are botocore's names (what ``controller.aws.CALL_HOOKS`` observers
receive); the actions are the IAM actions AWS checks for that call (usually one, sometimes more:
RunInstances with TagSpecifications also needs ec2:CreateTags, passing a role needs iam:PassRole;
some calls need none, e.g. sts:GetCallerIdentity). ``principal`` is who makes the call: ``cli``
(the user running spawn; `spawn iam cli-policy` prints a policy covering every cli declaration),
``agent`` (spored on the instance; `spawn iam agent-policy`) or ``admin`` (`spawn iam setup`, run
once per account by an administrator; never part of the CLI policies).

``check_calls`` takes operations actually recorded (e.g. by a test through ``CALL_HOOKS`` or
botocore's ``before-call`` event) and a policy document, and reports every operation that is not
declared and every declared action the policy does not grant.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

PRINCIPALS = ("cli", "agent", "admin")


@dataclass(frozen=True)
class Declaration:
    path: str
    service: str
    operation: str
    actions: tuple[str, ...]
    principal: str = "cli"


REGISTRY: list[Declaration] = []


def declare(path: str, service: str, operation: str, *actions: str, principal: str = "cli") -> None:
    """Declare that code ``path`` calls ``service.operation``, which needs ``actions``."""
    if principal not in PRINCIPALS:
        raise ValueError(f"principal must be one of {PRINCIPALS}")
    entry = Declaration(path, service, operation, tuple(actions), principal)
    if entry not in REGISTRY:
        REGISTRY.append(entry)


def declarations(principal: str = "cli", *, path_prefix: str = "") -> list[Declaration]:
    return [d for d in REGISTRY if d.principal == principal and d.path.startswith(path_prefix)]


def required_actions(principal: str = "cli", *, path_prefix: str = "") -> list[str]:
    """Every IAM action the principal's declared code paths need, sorted, deduplicated."""
    return sorted({a for d in declarations(principal, path_prefix=path_prefix) for a in d.actions})


# The code paths one `spawn launch` runs: its own, and the IAM provisioning and rollback it drives.
LAUNCH_PATHS = ("launch", "iam.provision", "iam.rollback")


def launch_actions() -> list[str]:
    """Every IAM action a launch may need (what `spawn doctor` checks), sorted."""
    return sorted({a for d in declarations("cli") if d.path.startswith(LAUNCH_PATHS) for a in d.actions})


def actions_for(service: str, operation: str, principal: str = "cli") -> tuple[str, ...] | None:
    """The declared actions of one operation (union over paths), or None if undeclared."""
    found = [d for d in REGISTRY
             if d.principal == principal and d.service == service and d.operation == operation]
    if not found:
        return None
    return tuple(sorted({a for d in found for a in d.actions}))


def check_calls(calls: Iterable[tuple[str, str]], policy: dict[str, Any], *,
                principal: str = "cli") -> list[str]:
    """Problems with recorded ``(service, operation)`` calls against ``policy``; empty when fine."""
    from controller.iam.document import allows

    problems: list[str] = []
    for service, operation in sorted(set(calls)):
        actions = actions_for(service, operation, principal)
        if actions is None:
            problems.append(f"{service}.{operation} is called but not declared in "
                            "controller/permissions.py")
            continue
        for action in actions:
            if not allows([policy], action):
                problems.append(f"{service}.{operation} needs {action}, which the {principal} "
                                "policy does not grant")
    return problems


# ---------------------------------------------------------------------------------------------
# controller.iam: provisioning (spawn launch), rollback, `spawn iam roles`, `spawn iam cleanup`
# ---------------------------------------------------------------------------------------------
declare("iam.provision", "iam", "GetRole", "iam:GetRole")
declare("iam.provision", "iam", "CreateRole", "iam:CreateRole", "iam:TagRole")
declare("iam.provision", "iam", "PutRolePolicy", "iam:PutRolePolicy")
declare("iam.provision", "iam", "AttachRolePolicy", "iam:AttachRolePolicy")
declare("iam.provision", "iam", "PutRolePermissionsBoundary", "iam:PutRolePermissionsBoundary")
declare("iam.provision", "iam", "ListRolePolicies", "iam:ListRolePolicies")
declare("iam.provision", "iam", "DeleteRolePolicy", "iam:DeleteRolePolicy")
declare("iam.provision", "iam", "GetRolePolicy", "iam:GetRolePolicy")
declare("iam.provision", "iam", "ListAttachedRolePolicies", "iam:ListAttachedRolePolicies")
declare("iam.provision", "iam", "GetPolicy", "iam:GetPolicy")
declare("iam.provision", "iam", "GetPolicyVersion", "iam:GetPolicyVersion")
declare("iam.provision", "iam", "GetInstanceProfile", "iam:GetInstanceProfile")
declare("iam.provision", "iam", "CreateInstanceProfile", "iam:CreateInstanceProfile",
        "iam:TagInstanceProfile")
# AddRoleToInstanceProfile also checks iam:PassRole on the role (IAM API Reference,
# AddRoleToInstanceProfile: "The caller of this operation must be granted the PassRole permission").
declare("iam.provision", "iam", "AddRoleToInstanceProfile", "iam:AddRoleToInstanceProfile",
        "iam:PassRole")
declare("iam.provision", "iam", "ListInstanceProfilesForRole", "iam:ListInstanceProfilesForRole")
declare("iam.rollback", "iam", "RemoveRoleFromInstanceProfile", "iam:RemoveRoleFromInstanceProfile")
declare("iam.rollback", "iam", "DeleteInstanceProfile", "iam:DeleteInstanceProfile")
declare("iam.rollback", "iam", "DetachRolePolicy", "iam:DetachRolePolicy")
declare("iam.rollback", "iam", "DeleteRole", "iam:DeleteRole")
declare("iam.rollback", "iam", "GetInstanceProfile", "iam:GetInstanceProfile")
declare("iam.rollback", "iam", "ListInstanceProfilesForRole", "iam:ListInstanceProfilesForRole")
declare("iam.rollback", "iam", "ListRolePolicies", "iam:ListRolePolicies")
declare("iam.rollback", "iam", "DeleteRolePolicy", "iam:DeleteRolePolicy")
declare("iam.rollback", "iam", "ListAttachedRolePolicies", "iam:ListAttachedRolePolicies")
declare("iam.roles", "iam", "ListRoles", "iam:ListRoles")
declare("iam.roles", "iam", "ListRoleTags", "iam:ListRoleTags")
declare("iam.roles", "iam", "ListInstanceProfilesForRole", "iam:ListInstanceProfilesForRole")
declare("iam.roles", "iam", "ListInstanceProfiles", "iam:ListInstanceProfiles")
declare("iam.roles", "ec2", "DescribeInstances", "ec2:DescribeInstances")
declare("iam.roles", "ec2", "DescribeRegions", "ec2:DescribeRegions")
declare("iam.cleanup", "iam", "RemoveRoleFromInstanceProfile", "iam:RemoveRoleFromInstanceProfile")
declare("iam.cleanup", "iam", "DeleteInstanceProfile", "iam:DeleteInstanceProfile")
declare("iam.cleanup", "iam", "ListRolePolicies", "iam:ListRolePolicies")
declare("iam.cleanup", "iam", "DeleteRolePolicy", "iam:DeleteRolePolicy")
declare("iam.cleanup", "iam", "ListAttachedRolePolicies", "iam:ListAttachedRolePolicies")
declare("iam.cleanup", "iam", "DetachRolePolicy", "iam:DetachRolePolicy")
declare("iam.cleanup", "iam", "DeleteRole", "iam:DeleteRole")
declare("iam.setup", "sts", "GetCallerIdentity", principal="admin")
declare("iam.setup", "iam", "GetPolicy", "iam:GetPolicy", principal="admin")
declare("iam.setup", "iam", "GetPolicyVersion", "iam:GetPolicyVersion", principal="admin")
declare("iam.setup", "iam", "CreatePolicy", "iam:CreatePolicy", "iam:TagPolicy", principal="admin")
declare("iam.setup", "iam", "ListPolicyVersions", "iam:ListPolicyVersions", principal="admin")
declare("iam.setup", "iam", "DeletePolicyVersion", "iam:DeletePolicyVersion", principal="admin")
declare("iam.setup", "iam", "CreatePolicyVersion", "iam:CreatePolicyVersion", principal="admin")

# ---------------------------------------------------------------------------------------------
# spawn launch (controller.launch): what its code calls today; its engineer keeps this current.
# ---------------------------------------------------------------------------------------------
declare("launch", "sts", "GetCallerIdentity")  # needs no permission (always allowed by AWS)
declare("launch", "iam", "GetPolicy", "iam:GetPolicy")  # is spawn's boundary set up here?
declare("launch", "ssm", "GetParameter", "ssm:GetParameter")
declare("launch", "iam", "GetPolicy", "iam:GetPolicy")  # linting managed policies / the boundary
declare("launch", "iam", "GetPolicyVersion", "iam:GetPolicyVersion")
declare("launch", "ec2", "DescribeInstanceTypes", "ec2:DescribeInstanceTypes")
declare("launch", "ec2", "DescribeImages", "ec2:DescribeImages")
declare("launch", "ec2", "DescribeVpcs", "ec2:DescribeVpcs")
declare("launch", "ec2", "DescribeSubnets", "ec2:DescribeSubnets")
declare("launch", "ec2", "DescribeKeyPairs", "ec2:DescribeKeyPairs")
declare("launch", "ec2", "ImportKeyPair", "ec2:ImportKeyPair", "ec2:CreateTags")  # tagged at creation
declare("launch", "ec2", "DeleteKeyPair", "ec2:DeleteKeyPair")
declare("launch", "ec2", "DescribeSecurityGroups", "ec2:DescribeSecurityGroups")
declare("launch", "ec2", "CreateSecurityGroup", "ec2:CreateSecurityGroup", "ec2:CreateTags")
declare("launch", "ec2", "AuthorizeSecurityGroupIngress", "ec2:AuthorizeSecurityGroupIngress")
declare("launch", "ec2", "DeleteSecurityGroup", "ec2:DeleteSecurityGroup")
declare("launch", "ec2", "RunInstances", "ec2:RunInstances", "ec2:CreateTags", "iam:PassRole")
declare("launch", "ec2", "DescribeInstances", "ec2:DescribeInstances")
declare("launch", "ec2", "TerminateInstances", "ec2:TerminateInstances")
declare("launch", "s3", "CreateBucket", "s3:CreateBucket", "s3:PutBucketOwnershipControls")
declare("launch", "s3", "HeadBucket", "s3:ListBucket")
declare("launch", "s3", "ListBuckets", "s3:ListAllMyBuckets")  # finds the bucket again if its name was taken
declare("launch", "s3", "PutPublicAccessBlock", "s3:PutBucketPublicAccessBlock")
declare("launch", "s3", "PutObject", "s3:PutObject", "s3:PutObjectTagging")
declare("launch", "s3", "HeadObject", "s3:GetObject")
declare("launch", "s3", "GetObject", "s3:GetObject")
declare("launch", "s3", "DeleteObject", "s3:DeleteObject")

# ---------------------------------------------------------------------------------------------
# spawn doctor (controller.doctor): reads, and the launch's EC2 writes with DryRun=True (a DryRun
# needs the same permission as the call itself: EC2 API Reference, the DryRun parameter).
# ---------------------------------------------------------------------------------------------
declare("doctor", "sts", "GetCallerIdentity")  # needs no permission (always allowed by AWS)
declare("doctor", "ec2", "DescribeRegions", "ec2:DescribeRegions")
declare("doctor", "ec2", "DescribeVpcs", "ec2:DescribeVpcs")
declare("doctor", "ec2", "DescribeSubnets", "ec2:DescribeSubnets")
declare("doctor", "ec2", "DescribeInstanceTypes", "ec2:DescribeInstanceTypes")
declare("doctor", "ec2", "DescribeImages", "ec2:DescribeImages")
declare("doctor", "ec2", "DescribeKeyPairs", "ec2:DescribeKeyPairs")
declare("doctor", "ec2", "DescribeSecurityGroups", "ec2:DescribeSecurityGroups")
declare("doctor", "ssm", "GetParameter", "ssm:GetParameter")
declare("doctor", "iam", "GetRole", "iam:GetRole")
declare("doctor", "iam", "GetPolicy", "iam:GetPolicy")  # spawn's boundary, when it exists
declare("doctor", "iam", "SimulatePrincipalPolicy", "iam:SimulatePrincipalPolicy")
declare("doctor", "ec2", "RunInstances", "ec2:RunInstances", "ec2:CreateTags")
declare("doctor", "ec2", "CreateSecurityGroup", "ec2:CreateSecurityGroup", "ec2:CreateTags")
declare("doctor", "ec2", "AuthorizeSecurityGroupIngress", "ec2:AuthorizeSecurityGroupIngress")
declare("doctor", "ec2", "ImportKeyPair", "ec2:ImportKeyPair", "ec2:CreateTags")
declare("doctor", "s3", "HeadBucket", "s3:ListBucket")

# ---------------------------------------------------------------------------------------------
# lifecycle commands (controller.lifecycle): list/status/extend/stop/start/terminate/config/connect
# ---------------------------------------------------------------------------------------------
declare("lifecycle", "ec2", "DescribeRegions", "ec2:DescribeRegions")
declare("lifecycle", "ec2", "DescribeInstances", "ec2:DescribeInstances")
declare("lifecycle", "ec2", "CreateTags", "ec2:CreateTags")
declare("lifecycle", "ec2", "ModifyInstanceAttribute", "ec2:ModifyInstanceAttribute")
declare("lifecycle", "ec2", "DeleteTags", "ec2:DeleteTags")
declare("lifecycle", "ec2", "StopInstances", "ec2:StopInstances")
declare("lifecycle", "ec2", "StartInstances", "ec2:StartInstances")
declare("lifecycle", "ec2", "TerminateInstances", "ec2:TerminateInstances")
declare("lifecycle", "ec2", "GetConsoleOutput", "ec2:GetConsoleOutput")
declare("lifecycle", "ec2", "DescribeImages", "ec2:DescribeImages")

# ---------------------------------------------------------------------------------------------
# spawn selftest (controller.selftest): launch's and the lifecycle's calls, plus its own
# ---------------------------------------------------------------------------------------------
declare("selftest", "ec2", "RunInstances", "ec2:RunInstances", "ec2:CreateTags")  # the agent-less peer
declare("selftest", "ec2", "DescribeInstances", "ec2:DescribeInstances")
declare("selftest", "ec2", "GetConsoleOutput", "ec2:GetConsoleOutput")
declare("selftest", "ec2", "TerminateInstances", "ec2:TerminateInstances")

# ---------------------------------------------------------------------------------------------
# spored (the agent, on the instance): exactly spored.ec2.PERMISSIONS, granted by
# controller.iam.agent_policy (tests/unit/test_iam_permissions.py holds the three equal)
# ---------------------------------------------------------------------------------------------
declare("agent", "ec2", "DescribeTags", "ec2:DescribeTags", principal="agent")
declare("agent", "ec2", "TerminateInstances", "ec2:TerminateInstances", principal="agent")
declare("agent", "ec2", "StopInstances", "ec2:StopInstances", principal="agent")
declare("agent", "ec2", "CreateTags", "ec2:CreateTags", principal="agent")
