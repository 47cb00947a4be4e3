"""Policies for the person (or CI) running spawn: minimal, full (the seed's) and scoped.

* ``minimal``: the seed's minimal statement unchanged, plus a ``SpawnAdditions`` statement with
  every action spawn's declared code paths (``controller.permissions``) need that the seed's
  list lacks (e.g. iam:GetRole, iam:PutRolePolicy, iam:TagRole, iam:GetInstanceProfile,
  ec2:DescribeSubnets). Everything on ``"*"``, as in the seed.
* ``full``: the seed's full policy, plus the same kind of additions statement for what it lacks.
* ``scoped``: the same actions, but ``iam:PassRole`` only on ``role/spawn/*`` and only to
  ``ec2.amazonaws.com``, and role/profile writes only under the ``/spawn/`` path. PassRole on
  ``*`` lets the holder hand ANY role (an admin role included) to an instance and use its
  credentials from there: the classic privilege escalation. The price of the scoped variant:
  ``--iam-role NAME`` can only be created or modified when the role lives under ``/spawn/``
  (spawn creates named roles there), and an existing role elsewhere cannot be passed. Attaching
  managed policies stays possible on spawn's roles, so pair it with a permissions boundary
  (``--iam-permissions-boundary``) where that matters.
"""

from __future__ import annotations

import copy
from typing import Any

from controller import permissions

from . import document as doclib
from .templates import POLICY_VERSION

SEED_MINIMAL_ACTIONS = (
    "ec2:RunInstances", "ec2:DescribeInstances", "ec2:DescribeInstanceTypes", "ec2:DescribeImages",
    "ec2:CreateTags", "ec2:TerminateInstances", "ec2:CreateSecurityGroup",
    "ec2:AuthorizeSecurityGroupIngress", "ec2:CreateKeyPair", "ec2:ImportKeyPair",
    "iam:CreateRole", "iam:AttachRolePolicy", "iam:CreateInstanceProfile",
    "iam:AddRoleToInstanceProfile", "iam:PassRole", "ssm:GetParameter",
)

SEED_MINIMAL: dict[str, Any] = {
    "Version": POLICY_VERSION,
    "Statement": [{"Effect": "Allow", "Action": list(SEED_MINIMAL_ACTIONS), "Resource": "*"}],
}

SEED_FULL: dict[str, Any] = {
    "Version": POLICY_VERSION,
    "Statement": [
        {"Sid": "EC2Management", "Effect": "Allow", "Action": ["ec2:*"], "Resource": "*"},
        {"Sid": "IAMManagement", "Effect": "Allow", "Action": [
            "iam:CreateRole", "iam:AttachRolePolicy", "iam:PutRolePolicy",
            "iam:CreateInstanceProfile", "iam:AddRoleToInstanceProfile", "iam:PassRole",
            "iam:GetRole", "iam:GetRolePolicy", "iam:ListAttachedRolePolicies"],
         "Resource": "*"},
        {"Sid": "SSMParameterAccess", "Effect": "Allow",
         "Action": ["ssm:GetParameter", "ssm:GetParameters"], "Resource": "*"},
        {"Sid": "DynamoDBAccess", "Effect": "Allow", "Action": ["dynamodb:*"], "Resource": "*"},
        {"Sid": "S3Access", "Effect": "Allow", "Action": ["s3:*"], "Resource": "*"},
        {"Sid": "LambdaAccess", "Effect": "Allow", "Action": [
            "lambda:InvokeFunction", "lambda:CreateFunction", "lambda:UpdateFunctionCode"],
         "Resource": "*"},
    ],
}

ADDITIONS_SID = "SpawnAdditions"
SPAWN_ROLE_ARN = "arn:{partition}:iam::*:role/spawn/*"
SPAWN_PROFILE_ARN = "arn:{partition}:iam::*:instance-profile/spawn/*"

# `spawn doctor` asks the policy simulator about its caller. The simulator "discloses information
# about the permissions granted to other users" (IAM API Reference, SimulatePrincipalPolicy), so
# the scoped policy allows it only on the caller's own IAM user: ${aws:username} in a Resource is
# the IAM User Guide's own pattern for "users manage themselves". A role session is not covered
# (no policy variable names the role); doctor then falls back to EC2 DryRun calls.
SIMULATE = "iam:SimulatePrincipalPolicy"
SELF_USER_ARN = "arn:{partition}:iam::*:user/${{aws:username}}"

# IAM writes that create or change a role or profile: limited to /spawn/ in the scoped variant.
_IAM_ROLE_WRITES = frozenset({
    "iam:CreateRole", "iam:TagRole", "iam:PutRolePolicy", "iam:DeleteRolePolicy",
    "iam:AttachRolePolicy", "iam:DetachRolePolicy", "iam:PutRolePermissionsBoundary",
    "iam:DeleteRole", "iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile",
})
_IAM_PROFILE_WRITES = frozenset({
    "iam:CreateInstanceProfile", "iam:TagInstanceProfile", "iam:DeleteInstanceProfile",
    "iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile",
})


def needed_actions() -> list[str]:
    """What spawn's declared CLI code paths need."""
    return permissions.required_actions("cli")


def missing_from(policy: dict[str, Any]) -> list[str]:
    return [a for a in needed_actions() if not doclib.allows([policy], a)]


def _with_additions(seed: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(seed)
    extra = missing_from(seed)
    if extra:
        out["Statement"].append({"Sid": ADDITIONS_SID, "Effect": "Allow", "Action": extra,
                                 "Resource": "*"})
    return out


def minimal_policy() -> dict[str, Any]:
    return _with_additions(SEED_MINIMAL)


def full_policy() -> dict[str, Any]:
    return _with_additions(SEED_FULL)


def scoped_policy(*, partition: str = "aws") -> dict[str, Any]:
    actions = sorted(set(SEED_MINIMAL_ACTIONS) | set(needed_actions()))
    role_arn = SPAWN_ROLE_ARN.format(partition=partition)
    profile_arn = SPAWN_PROFILE_ARN.format(partition=partition)
    iam_writes = [a for a in actions if a in _IAM_ROLE_WRITES | _IAM_PROFILE_WRITES]
    other = [a for a in actions if a not in iam_writes and a not in ("iam:PassRole", SIMULATE)]
    statements: list[dict[str, Any]] = [
        {"Sid": "SpawnReadsAndEC2", "Effect": "Allow", "Action": other, "Resource": "*"},
        {"Sid": "SpawnRoleWrites", "Effect": "Allow", "Action": iam_writes,
         "Resource": [role_arn, profile_arn]},
        {"Sid": "PassOnlySpawnRolesToEC2", "Effect": "Allow", "Action": "iam:PassRole",
         "Resource": role_arn,
         "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}},
    ]
    if SIMULATE in actions:
        statements.append({"Sid": "SimulateOwnPolicies", "Effect": "Allow", "Action": SIMULATE,
                           "Resource": SELF_USER_ARN.format(partition=partition)})
    return {"Version": POLICY_VERSION, "Statement": statements}


def policy(kind: str) -> dict[str, Any]:
    if kind == "full":
        return full_policy()
    if kind == "scoped":
        return scoped_policy()
    return minimal_policy()
