"""Policies for the person (or CI) running spawn: minimal, full (the seed's) and scoped.

* ``minimal``: the seed's minimal statement unchanged, plus a ``SpawnAdditions`` statement with
  every action spawn's declared code paths (``controller.permissions``) need that the seed's
  list lacks (e.g. iam:GetRole, iam:PutRolePolicy, iam:TagRole, iam:GetInstanceProfile,
  ec2:DescribeSubnets). Everything on ``"*"``, as in the seed.
* ``full``: the seed's full policy, plus the same kind of additions statement for what it lacks.
* ``scoped``: only what spawn's declared code paths need (nothing of the seed's list that spawn
  never calls), each action limited to spawn's own resources. This is the pattern AWS recommends
  for delegated role creation (IAM User Guide, "Permissions boundaries for IAM entities"):

  - every role write (CreateRole, PutRolePolicy, AttachRolePolicy, DetachRolePolicy,
    DeleteRolePolicy, PutRolePermissionsBoundary) requires ``iam:PermissionsBoundary`` to be
    spawn's boundary (``controller.iam.boundary``, created once per account by ``spawn iam
    setup``), on roles under ``/spawn/``; DeleteRolePermissionsBoundary is explicitly denied, as
    are edits of the boundary policy itself and changes of a spawn role's trust policy;
  - PassRole only of ``role/spawn/*``, only to ``ec2.amazonaws.com``;
  - EC2 writes only on resources tagged ``spawn:managed=true``; creating calls must tag what
    they create that way (``aws:RequestTag``, and CreateTags only with ``ec2:CreateAction``);
    tag writes only for ``spawn:*`` keys and ``Name``;
  - S3 only on spawn's bundle buckets (``spawn-agent-*``), SSM only AWS's public parameters.

  Which actions a declared call needs comes from ``controller.permissions``; which statement
  grants it, from ``_SCOPE`` below. moto ignores conditions (and matches non-S3 resources
  against ``*`` only), so the conditions are proven with a condition-aware evaluator
  (tests/unit/test_iam_cli_scoped.py); only a live AWS account evaluates them for real.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from controller import permissions
from spored.contract import MANAGED_VALUE, TAG_MANAGED, TAG_NAME, TAG_PREFIX

from . import document as doclib
from .boundary import BOUNDARY_NAME, BOUNDARY_PATH
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


# ---------------------------------------------------------------------------------------------
# scoped: least privilege, in the shape AWS recommends for delegated role creation
# ---------------------------------------------------------------------------------------------
# Each statement's Resource patterns ("{p}" is the partition). Every ARN form below is the one the
# Service Authorization Reference gives for the resource type (IAM role/instance-profile/policy,
# EC2 instance/volume/image/..., S3 bucket/object, SSM parameter).
ROLES = "arn:{p}:iam::*:role/spawn/*"
PROFILES = "arn:{p}:iam::*:instance-profile/spawn/*"
# The boundary in the caller's own account: ${aws:PrincipalAccount} is a global key (IAM User
# Guide, "AWS global condition context keys") and, like every single-valued key, usable as a
# policy variable in string condition values (IAM User Guide, "IAM policy elements: Variables
# and tags"); so the printed policy needs no account number and cannot name another account's.
BOUNDARY_IN_CALLERS_ACCOUNT = ("arn:{p}:iam::${{aws:PrincipalAccount}}:policy"
                               f"{BOUNDARY_PATH}{BOUNDARY_NAME}")
BOUNDARY_ANY_ACCOUNT = f"arn:{{p}}:iam::*:policy{BOUNDARY_PATH}{BOUNDARY_NAME}"
# spawn's agent bundle buckets: spawn-agent-<account>-<region>, and any fallback name spawn picks
# when that one is taken keeps the prefix (controller.launch.agent_source).
BUNDLE_BUCKETS = "arn:{p}:s3:::spawn-agent-*"
BUNDLE_OBJECTS = "arn:{p}:s3:::spawn-agent-*/*"
# AWS's public parameters (the AL2023 AMI ids) live under /aws/service/ (Systems Manager User
# Guide, "Discovering public parameters in Parameter Store"); their ARNs carry no account, which
# the account wildcard matches. Nothing else: a SecureString parameter elsewhere stays unreadable.
PUBLIC_PARAMETERS = "arn:{p}:ssm:*:*:parameter/aws/service/*"
EC2_INSTANCES = "arn:{p}:ec2:*:*:instance/*"
EC2_VOLUMES = "arn:{p}:ec2:*:*:volume/*"
EC2_GROUPS = "arn:{p}:ec2:*:*:security-group/*"
EC2_KEY_PAIRS = "arn:{p}:ec2:*:*:key-pair/*"
# What RunInstances uses without creating it (images and snapshots carry no account in their ARN).
EC2_LAUNCH_INPUTS = ("arn:{p}:ec2:*::image/*", "arn:{p}:ec2:*::snapshot/*",
                     "arn:{p}:ec2:*:*:subnet/*", "arn:{p}:ec2:*:*:network-interface/*",
                     EC2_GROUPS, EC2_KEY_PAIRS)
EC2_VPCS = "arn:{p}:ec2:*:*:vpc/*"
# `spawn doctor` asks the policy simulator about its caller. The simulator "discloses information
# about the permissions granted to other users" (IAM API Reference, SimulatePrincipalPolicy), so
# the scoped policy allows it only on the caller's own IAM user: ${aws:username} in a Resource is
# the IAM User Guide's own pattern for "users manage themselves". A role session is not covered
# (no policy variable names the role); doctor then falls back to EC2 DryRun calls.
SELF_USER = "arn:{p}:iam::*:user/${{aws:username}}"

# Tag keys the person running spawn may write: spawn's own and Name (spored.contract).
SPAWN_TAG_KEYS = [f"{TAG_PREFIX}*", TAG_NAME]
_MANAGED = {"StringEquals": {f"ec2:ResourceTag/{TAG_MANAGED}": MANAGED_VALUE}}
_CREATED_MANAGED = {"StringEquals": {f"aws:RequestTag/{TAG_MANAGED}": MANAGED_VALUE}}
_ONLY_SPAWN_KEYS = {"ForAllValues:StringLike": {"aws:TagKeys": SPAWN_TAG_KEYS}}
# The creating calls spawn tags at creation (TagSpecifications): CreateTags is then authorized
# with ec2:CreateAction naming the call (EC2 User Guide, "Grant permission to tag Amazon EC2
# resources during creation").
TAG_ON_CREATE_ACTIONS = ["RunInstances", "CreateSecurityGroup", "ImportKeyPair"]


@dataclass(frozen=True)
class _Statement:
    sid: str
    resources: tuple[str, ...]
    condition: dict[str, Any] | None = None
    effect: str = "Allow"
    actions: tuple[str, ...] = ()  # fixed actions (the Deny statements); others come from _SCOPE

    def render(self, actions: list[str], partition: str) -> dict[str, Any]:
        resources = [r.format(p=partition) for r in self.resources]
        stmt: dict[str, Any] = {"Sid": self.sid, "Effect": self.effect,
                                "Action": actions[0] if len(actions) == 1 else actions,
                                "Resource": resources[0] if len(resources) == 1 else resources}
        if self.condition:
            stmt["Condition"] = _format(self.condition, partition)
        return stmt


def _format(value: Any, partition: str) -> Any:
    if isinstance(value, str):
        return value.format(p=partition)
    if isinstance(value, list):
        return [_format(v, partition) for v in value]
    if isinstance(value, dict):
        return {k: _format(v, partition) for k, v in value.items()}
    return value


READS = "SpawnReads"
IAM_READS = "SpawnIamReads"
UNSCOPED = "SpawnNotYetScoped"
_STATEMENTS: tuple[_Statement, ...] = (
    # Reads without resource-level permissions (EC2 Describe*, iam:ListRoles, ...): "*" is the
    # only Resource AWS accepts for them.
    _Statement(READS, ("*",)),
    # IAM reads of roles, profiles and policies anywhere: an existing --iam-role is inspected
    # wherever it lives, and an attached managed policy may be AWS's own.
    _Statement(IAM_READS, ("arn:{p}:iam::*:role/*", "arn:{p}:iam::*:instance-profile/*",
                           "arn:{p}:iam::*:policy/*")),
    # Role writes only with spawn's boundary on the role (IAM User Guide, "Permissions boundaries
    # for IAM entities": delegating with iam:PermissionsBoundary). For CreateRole and
    # PutRolePermissionsBoundary the key is the boundary in the request; for the policy writes,
    # the boundary the role already has. DeleteRolePermissionsBoundary is never allowed.
    _Statement("SpawnRoleWritesOnlyWithBoundary", (ROLES,),
               {"StringEquals": {"iam:PermissionsBoundary": BOUNDARY_IN_CALLERS_ACCOUNT}}),
    _Statement("SpawnRoleAndProfileTags", (ROLES, PROFILES),
               {"ForAllValues:StringLike": {"aws:TagKeys": [f"{TAG_PREFIX}*"]}}),
    _Statement("SpawnRolesAndProfiles", (ROLES, PROFILES)),
    # PassRole: spawn's roles, to EC2 only. IfExists: AddRoleToInstanceProfile also checks
    # iam:PassRole (IAM API Reference, AddRoleToInstanceProfile) and AWS does not document which
    # service that check names; a request that names one must name EC2.
    _Statement("PassOnlySpawnRolesToEC2", (ROLES,),
               {"StringEqualsIfExists": {"iam:PassedToService": "ec2.amazonaws.com"}}),
    # Launch: the instance and its volumes must be created tagged spawn:managed=true.
    _Statement("SpawnLaunchTaggedInstances", (EC2_INSTANCES, EC2_VOLUMES), _CREATED_MANAGED),
    _Statement("SpawnLaunchInputs", EC2_LAUNCH_INPUTS),
    _Statement("SpawnTagOnCreate", (EC2_INSTANCES, EC2_VOLUMES, EC2_GROUPS, EC2_KEY_PAIRS),
               {"StringEquals": {"ec2:CreateAction": TAG_ON_CREATE_ACTIONS}, **_ONLY_SPAWN_KEYS}),
    # Later tag writes (extend, config, stop/start bookkeeping): managed instances, spawn's keys.
    _Statement("SpawnTagManagedInstances", (EC2_INSTANCES,), {**_MANAGED, **_ONLY_SPAWN_KEYS}),
    _Statement("SpawnManagedInstances", (EC2_INSTANCES,), _MANAGED),
    _Statement("SpawnCreateTaggedGroups", (EC2_GROUPS,), _CREATED_MANAGED),
    _Statement("SpawnCreateGroupsInVpcs", (EC2_VPCS,)),
    _Statement("SpawnManagedGroups", (EC2_GROUPS,), _MANAGED),
    _Statement("SpawnImportTaggedKeyPairs", (EC2_KEY_PAIRS,), _CREATED_MANAGED),
    _Statement("SpawnManagedKeyPairs", (EC2_KEY_PAIRS,), _MANAGED),
    _Statement("SpawnBundleBuckets", (BUNDLE_BUCKETS,)),
    _Statement("SpawnBundleObjects", (BUNDLE_OBJECTS,)),
    _Statement("SpawnPublicParameters", (PUBLIC_PARAMETERS,)),
    _Statement("SimulateOwnPolicies", (SELF_USER,)),
    # A newly declared action nobody has scoped yet lands here, on "*", so spawn keeps working;
    # a unit test fails while this statement exists.
    _Statement(UNSCOPED, ("*",)),
    # Guard rails from AWS's delegation example: the boundary can neither be removed from a role
    # nor edited, and spawn's roles keep the trust spawn gave them. Explicit: they hold even when
    # the same person has broader policies too.
    _Statement("DenyBoundaryRemoval", ("*",), effect="Deny",
               actions=("iam:DeleteRolePermissionsBoundary",)),
    _Statement("DenyBoundaryEdits", (BOUNDARY_ANY_ACCOUNT,), effect="Deny",
               actions=("iam:CreatePolicyVersion", "iam:DeletePolicy", "iam:DeletePolicyVersion",
                        "iam:SetDefaultPolicyVersion")),
    _Statement("DenyTrustChanges", (ROLES,), effect="Deny",
               actions=("iam:UpdateAssumeRolePolicy",)),
)

# Where each action spawn declares goes (an action may need several statements: RunInstances
# touches created and existing resources). ec2:Describe*, iam:Get* and iam:List* not named here
# are reads.
_SCOPE: dict[str, tuple[str, ...]] = {
    "iam:CreateRole": ("SpawnRoleWritesOnlyWithBoundary",),
    "iam:PutRolePolicy": ("SpawnRoleWritesOnlyWithBoundary",),
    "iam:AttachRolePolicy": ("SpawnRoleWritesOnlyWithBoundary",),
    "iam:DetachRolePolicy": ("SpawnRoleWritesOnlyWithBoundary",),
    "iam:DeleteRolePolicy": ("SpawnRoleWritesOnlyWithBoundary",),
    "iam:PutRolePermissionsBoundary": ("SpawnRoleWritesOnlyWithBoundary",),
    "iam:TagRole": ("SpawnRoleAndProfileTags",),
    "iam:TagInstanceProfile": ("SpawnRoleAndProfileTags",),
    "iam:DeleteRole": ("SpawnRolesAndProfiles",),
    "iam:CreateInstanceProfile": ("SpawnRolesAndProfiles",),
    "iam:DeleteInstanceProfile": ("SpawnRolesAndProfiles",),
    "iam:AddRoleToInstanceProfile": ("SpawnRolesAndProfiles",),
    "iam:RemoveRoleFromInstanceProfile": ("SpawnRolesAndProfiles",),
    "iam:PassRole": ("PassOnlySpawnRolesToEC2",),
    "ec2:RunInstances": ("SpawnLaunchTaggedInstances", "SpawnLaunchInputs"),
    "ec2:CreateTags": ("SpawnTagOnCreate", "SpawnTagManagedInstances"),
    "ec2:DeleteTags": ("SpawnTagManagedInstances",),
    "ec2:TerminateInstances": ("SpawnManagedInstances",),
    "ec2:StopInstances": ("SpawnManagedInstances",),
    "ec2:StartInstances": ("SpawnManagedInstances",),
    # spawn config set spawn:on-complete (the shutdown behaviour). Service Authorization Reference:
    # ModifyInstanceAttribute on instance* takes ec2:ResourceTag/${TagKey}, like StopInstances.
    "ec2:ModifyInstanceAttribute": ("SpawnManagedInstances",),
    "ec2:GetConsoleOutput": ("SpawnManagedInstances",),
    "ec2:CreateSecurityGroup": ("SpawnCreateTaggedGroups", "SpawnCreateGroupsInVpcs"),
    "ec2:AuthorizeSecurityGroupIngress": ("SpawnManagedGroups",),
    "ec2:DeleteSecurityGroup": ("SpawnManagedGroups",),
    "ec2:ImportKeyPair": ("SpawnImportTaggedKeyPairs",),
    "ec2:DeleteKeyPair": ("SpawnManagedKeyPairs",),
    "s3:CreateBucket": ("SpawnBundleBuckets",),
    "s3:ListBucket": ("SpawnBundleBuckets",),
    "s3:PutBucketOwnershipControls": ("SpawnBundleBuckets",),
    "s3:PutBucketPublicAccessBlock": ("SpawnBundleBuckets",),
    "s3:PutObject": ("SpawnBundleObjects",),
    "s3:PutObjectTagging": ("SpawnBundleObjects",),
    "s3:GetObject": ("SpawnBundleObjects",),
    "s3:DeleteObject": ("SpawnBundleObjects",),
    # Finds a fallback bundle bucket again; ListAllMyBuckets has no resource type, so "*".
    "s3:ListAllMyBuckets": (READS,),
    "ssm:GetParameter": ("SpawnPublicParameters",),
    "iam:SimulatePrincipalPolicy": ("SimulateOwnPolicies",),
}
# IAM reads that name no resource type (Service Authorization Reference for IAM).
_IAM_ACCOUNT_READS = frozenset({"iam:ListRoles", "iam:ListInstanceProfiles", "iam:ListPolicies"})


def scope_of(action: str) -> tuple[str, ...]:
    """The scoped policy's statements that grant ``action`` (``SpawnNotYetScoped`` if none)."""
    if action in _SCOPE:
        return _SCOPE[action]
    if action.startswith("ec2:Describe") or action in _IAM_ACCOUNT_READS:
        return (READS,)
    if action.startswith(("iam:Get", "iam:List")):
        return (IAM_READS,)
    return (UNSCOPED,)


def scoped_policy(*, partition: str = "aws") -> dict[str, Any]:
    """Least privilege for the person running spawn; see docs/iam.md ("The scoped policy")."""
    placed: dict[str, list[str]] = {s.sid: list(s.actions) for s in _STATEMENTS}
    for action in needed_actions():
        for sid in scope_of(action):
            placed[sid].append(action)
    return {"Version": POLICY_VERSION,
            "Statement": [s.render(sorted(placed[s.sid]), partition)
                          for s in _STATEMENTS if placed[s.sid]]}


def policy(kind: str) -> dict[str, Any]:
    if kind == "full":
        return full_policy()
    if kind == "scoped":
        return scoped_policy()
    return minimal_policy()
