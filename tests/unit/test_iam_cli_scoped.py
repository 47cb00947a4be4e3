"""The scoped CLI policy: its shape, its size and its lint (the evaluator matrix proves its
conditions; see the second half of this file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller import permissions
from controller.iam.boundary import boundary_arn, boundary_document
from controller.iam.cli_policy import UNSCOPED, scope_of, scoped_policy
from controller.iam.document import compact_size, statements
from controller.iam.lint import lint_document
from tests.iam_evaluator import Effect, evaluate

MAX_MANAGED_POLICY_CHARS = 6_144  # IAM quotas; the policy is attached as a managed policy


def _by_sid() -> dict[str, dict[str, object]]:
    return {str(s["Sid"]): s for s in statements(scoped_policy())}


def test_every_declared_action_has_its_statement() -> None:
    assert UNSCOPED not in _by_sid()
    unplaced = [a for a in permissions.required_actions("cli") if scope_of(a) == (UNSCOPED,)]
    assert unplaced == []


def test_listing_the_accounts_buckets_is_a_read_when_declared() -> None:
    permissions.declare("test", "s3", "ListBuckets", "s3:ListAllMyBuckets")
    try:
        reads = next(s for s in statements(scoped_policy()) if s["Sid"] == "SpawnReads")
        assert "s3:ListAllMyBuckets" in reads["Action"] and reads["Resource"] == "*"
    finally:
        permissions.REGISTRY.pop()


def test_an_action_nobody_placed_still_works_but_is_visible() -> None:
    permissions.declare("test", "ec2", "ModifyInstanceMetadataOptions", "ec2:ModifyInstanceMetadataOptions")
    try:
        stmt = next(s for s in statements(scoped_policy()) if s["Sid"] == UNSCOPED)
        assert stmt["Action"] == "ec2:ModifyInstanceMetadataOptions" and stmt["Resource"] == "*"
    finally:
        permissions.REGISTRY.pop()


def test_no_seed_action_spawn_never_calls() -> None:
    text = json.dumps(scoped_policy())
    assert "ec2:CreateKeyPair" not in text


def test_guard_rails_are_explicit_denies() -> None:
    sids = _by_sid()
    assert sids["DenyBoundaryRemoval"]["Action"] == "iam:DeleteRolePermissionsBoundary"
    assert sids["DenyBoundaryEdits"]["Resource"] == "arn:aws:iam::*:policy/spawn/spawn-boundary"
    assert sids["DenyTrustChanges"]["Action"] == "iam:UpdateAssumeRolePolicy"
    allowed = [s for s in statements(scoped_policy()) if s["Effect"] == "Allow"]
    assert "DeleteRolePermissionsBoundary" not in json.dumps(allowed)


def test_fits_a_managed_policy() -> None:
    assert compact_size(scoped_policy()) < MAX_MANAGED_POLICY_CHARS


def test_lints_without_errors() -> None:
    report = lint_document(scoped_policy())
    assert report.errors == []
    assert {f.issue for f in report.warnings} <= {"MISMATCHED_TYPE_BUT_USABLE", "RESOURCE_MISMATCH"}


def test_other_partitions() -> None:
    text = json.dumps(scoped_policy(partition="aws-us-gov"))
    assert "arn:aws:" not in text and "arn:aws-us-gov:iam::${aws:PrincipalAccount}:policy/spawn/" in text


# =============================================================================================
# The evaluator matrix: what AWS decides for the scoped policy, request by request.
#
# moto ignores conditions, so this is the only proof of them. Requests are built by ``_req``,
# which refuses any condition key the Service Authorization Reference does not list for the
# action and resource type (read from parliament's copy of it) or that is not a documented
# global key: a context AWS would never send cannot make the policy look right.
# =============================================================================================

ACCOUNT = "123456789012"
OTHER_ACCOUNT = "210987654321"
USER = f"arn:aws:iam::{ACCOUNT}:user/alice"
BOUNDARY = boundary_arn(ACCOUNT)
ADMIN = "arn:aws:iam::aws:policy/AdministratorAccess"
SPAWN_ROLE = f"arn:aws:iam::{ACCOUNT}:role/spawn/spawn-0123456789ab"
SPAWN_PROFILE = f"arn:aws:iam::{ACCOUNT}:instance-profile/spawn/spawn-0123456789ab"
INSTANCE = f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-0123456789abcdef0"
VOLUME = f"arn:aws:ec2:us-east-1:{ACCOUNT}:volume/vol-0123456789abcdef0"
GROUP = f"arn:aws:ec2:us-east-1:{ACCOUNT}:security-group/sg-0123456789abcdef0"
KEY_PAIR = f"arn:aws:ec2:us-east-1:{ACCOUNT}:key-pair/spawn-ed25519-0123456789ab"
BUCKET = f"arn:aws:s3:::spawn-agent-{ACCOUNT}-us-east-1"
MANAGED = {"ec2:ResourceTag/spawn:managed": "true", "aws:ResourceTag/spawn:managed": "true"}
LAUNCH_TAGS = {"spawn:managed": "true", "Name": "train-1", "spawn:ttl": "2h",
               "spawn:expires-at": "2026-11-30T12:00:00Z"}
GLOBAL_KEYS = ("aws:PrincipalArn", "aws:PrincipalAccount", "aws:RequestedRegion", "aws:username")


def _sar() -> dict[str, Any]:
    import parliament

    path = Path(parliament.__file__).parent / "iam_definition.json"
    return {s["prefix"]: s for s in json.loads(path.read_text(encoding="utf-8"))}


SAR = _sar()


def documented(action: str, resource_type: str | None) -> list[str]:
    """Condition keys the Service Authorization Reference lists for an action on a resource type
    (the resource type's own keys included), plus the documented global keys used here."""
    service, name = action.split(":")
    data = SAR[service]
    entry = next(p for p in data["privileges"] if p["privilege"] == name)
    keys = list(GLOBAL_KEYS)
    for rt in entry["resource_types"]:
        kind = rt["resource_type"].rstrip("*")
        if kind in ("", resource_type):
            keys += rt["condition_keys"]
    if resource_type:
        assert any(rt["resource_type"].rstrip("*") == resource_type
                   for rt in entry["resource_types"]), f"{action} has no {resource_type}"
        keys += next(r["condition_keys"] for r in data["resources"] if r["resource"] == resource_type)
    return keys


def _covers(documented_key: str, key: str) -> bool:
    for family in ("${TagKey}", "<key>"):
        if documented_key.endswith(family):
            prefix = documented_key[: -len(family)].lower()
            return key.lower().startswith(prefix) and len(key) > len(prefix)
    return documented_key.lower() == key.lower()


def _req(action: str, resource_type: str | None, context: dict[str, Any]) -> dict[str, Any]:
    ctx: dict[str, Any] = {"aws:PrincipalArn": USER, "aws:PrincipalAccount": ACCOUNT,
                           "aws:RequestedRegion": "us-east-1", "aws:username": "alice", **context}
    keys = documented(action, resource_type)
    for key in ctx:
        assert any(_covers(d, key) for d in keys), \
            f"{key} is not a documented condition key for {action} on {resource_type}"
    return ctx


def _tags(tags: dict[str, str]) -> dict[str, Any]:
    return {"aws:TagKeys": list(tags), **{f"aws:RequestTag/{k}": v for k, v in tags.items()}}


# (case, action, resource type, resource ARN, context)
ALLOWED: list[tuple[str, str, str | None, str, dict[str, Any]]] = [
    ("read roles anywhere", "iam:GetRole", "role", f"arn:aws:iam::{ACCOUNT}:role/x", {}),
    ("list roles", "iam:ListRoles", None, "*", {}),
    ("describe instances", "ec2:DescribeInstances", None, "*", {}),
    ("create a spawn role with the boundary", "iam:CreateRole", "role", SPAWN_ROLE,
     {"iam:PermissionsBoundary": BOUNDARY, **_tags({"spawn:managed": "true"})}),
    ("tag it with spawn keys", "iam:TagRole", "role", SPAWN_ROLE, _tags({"spawn:managed": "true"})),
    ("inline policy on a bounded role", "iam:PutRolePolicy", "role", SPAWN_ROLE,
     {"iam:PermissionsBoundary": BOUNDARY}),
    ("managed policy on a bounded role", "iam:AttachRolePolicy", "role", SPAWN_ROLE,
     {"iam:PermissionsBoundary": BOUNDARY, "iam:PolicyARN": ADMIN}),
    ("detach from a bounded role", "iam:DetachRolePolicy", "role", SPAWN_ROLE,
     {"iam:PermissionsBoundary": BOUNDARY, "iam:PolicyARN": ADMIN}),
    ("delete inline policy of a bounded role", "iam:DeleteRolePolicy", "role", SPAWN_ROLE,
     {"iam:PermissionsBoundary": BOUNDARY}),
    ("set spawn's boundary on a spawn role", "iam:PutRolePermissionsBoundary", "role", SPAWN_ROLE,
     {"iam:PermissionsBoundary": BOUNDARY}),
    ("delete a spawn role", "iam:DeleteRole", "role", SPAWN_ROLE, {}),
    ("create a spawn profile", "iam:CreateInstanceProfile", "instance-profile", SPAWN_PROFILE,
     _tags({"spawn:managed": "true"})),
    ("tag it", "iam:TagInstanceProfile", "instance-profile", SPAWN_PROFILE,
     _tags({"spawn:managed": "true"})),
    ("add the role to it", "iam:AddRoleToInstanceProfile", "instance-profile", SPAWN_PROFILE, {}),
    ("remove it", "iam:RemoveRoleFromInstanceProfile", "instance-profile", SPAWN_PROFILE, {}),
    ("delete the profile", "iam:DeleteInstanceProfile", "instance-profile", SPAWN_PROFILE, {}),
    ("pass a spawn role to EC2", "iam:PassRole", "role", SPAWN_ROLE,
     {"iam:PassedToService": "ec2.amazonaws.com"}),
    ("pass check of AddRoleToInstanceProfile (no service named)", "iam:PassRole", "role",
     SPAWN_ROLE, {}),
    ("launch a tagged instance", "ec2:RunInstances", "instance", INSTANCE, _tags(LAUNCH_TAGS)),
    ("with tagged volumes", "ec2:RunInstances", "volume", VOLUME, _tags(LAUNCH_TAGS)),
    ("from an AMI", "ec2:RunInstances", "image",
     "arn:aws:ec2:us-east-1::image/ami-0123456789abcdef0", {}),
    ("in a subnet", "ec2:RunInstances", "subnet",
     f"arn:aws:ec2:us-east-1:{ACCOUNT}:subnet/subnet-0123", {}),
    ("with an interface", "ec2:RunInstances", "network-interface",
     f"arn:aws:ec2:us-east-1:{ACCOUNT}:network-interface/*", {}),
    ("in a group", "ec2:RunInstances", "security-group", GROUP, {}),
    ("with a key", "ec2:RunInstances", "key-pair", KEY_PAIR, {}),
    ("tags at launch", "ec2:CreateTags", "instance", INSTANCE,
     {"ec2:CreateAction": "RunInstances", **_tags(LAUNCH_TAGS)}),
    ("tags on a new group", "ec2:CreateTags", "security-group", GROUP,
     {"ec2:CreateAction": "CreateSecurityGroup", **_tags({"spawn:managed": "true"})}),
    ("tags on an imported key", "ec2:CreateTags", "key-pair", KEY_PAIR,
     {"ec2:CreateAction": "ImportKeyPair", **_tags({"spawn:managed": "true"})}),
    ("extend: a new deadline", "ec2:CreateTags", "instance", INSTANCE,
     {**MANAGED, **_tags({"spawn:expires-at": "2026-11-30T14:00:00Z"})}),
    ("start: drop the paused TTL", "ec2:DeleteTags", "instance", INSTANCE,
     {**MANAGED, "aws:TagKeys": ["spawn:ttl-remaining"]}),
    ("terminate a managed instance", "ec2:TerminateInstances", "instance", INSTANCE, MANAGED),
    ("stop it", "ec2:StopInstances", "instance", INSTANCE, MANAGED),
    ("start it", "ec2:StartInstances", "instance", INSTANCE, MANAGED),
    ("read its console", "ec2:GetConsoleOutput", "instance", INSTANCE, MANAGED),
    ("config set on-complete: its shutdown behaviour", "ec2:ModifyInstanceAttribute", "instance", INSTANCE,
     MANAGED),
    ("create a tagged group", "ec2:CreateSecurityGroup", "security-group", GROUP,
     _tags({"spawn:managed": "true"})),
    ("in a VPC", "ec2:CreateSecurityGroup", "vpc", f"arn:aws:ec2:us-east-1:{ACCOUNT}:vpc/vpc-1", {}),
    ("open SSH on spawn's group", "ec2:AuthorizeSecurityGroupIngress", "security-group", GROUP,
     MANAGED),
    ("delete spawn's group", "ec2:DeleteSecurityGroup", "security-group", GROUP, MANAGED),
    ("import a tagged key", "ec2:ImportKeyPair", "key-pair", KEY_PAIR, _tags({"spawn:managed": "true"})),
    ("delete spawn's key", "ec2:DeleteKeyPair", "key-pair", KEY_PAIR, MANAGED),
    ("create the bundle bucket", "s3:CreateBucket", "bucket", BUCKET, {}),
    ("a fallback bundle bucket", "s3:CreateBucket", "bucket", f"{BUCKET}-7k2q9x", {}),
    ("find the fallback bucket among the account's own", "s3:ListAllMyBuckets", None, "*", {}),
    ("head it", "s3:ListBucket", "bucket", BUCKET, {}),
    ("block public access", "s3:PutBucketPublicAccessBlock", "bucket", BUCKET, {}),
    ("ownership", "s3:PutBucketOwnershipControls", "bucket", BUCKET, {}),
    ("upload the bundle", "s3:PutObject", "object", f"{BUCKET}/spored-bundle/abc/b.tar.gz", {}),
    ("tag it", "s3:PutObjectTagging", "object", f"{BUCKET}/spored-bundle/abc/b.tar.gz", {}),
    ("read it", "s3:GetObject", "object", f"{BUCKET}/spored-bundle/abc/b.tar.gz", {}),
    ("delete it", "s3:DeleteObject", "object", f"{BUCKET}/spored-bundle/abc/b.tar.gz", {}),
    ("the AL2023 AMI parameter", "ssm:GetParameter", "parameter",
     "arn:aws:ssm:us-east-1::parameter/aws/service/ami-amazon-linux-latest/"
     "al2023-ami-kernel-default-x86_64", {}),
    ("doctor simulates its own user's policies", "iam:SimulatePrincipalPolicy", "user", USER, {}),
]

DENIED: list[tuple[str, str, str | None, str, dict[str, Any]]] = [
    ("CreateRole /spawn/x without a boundary", "iam:CreateRole", "role",
     f"arn:aws:iam::{ACCOUNT}:role/spawn/x", {}),
    ("CreateRole /spawn/x with AdministratorAccess as boundary", "iam:CreateRole", "role",
     f"arn:aws:iam::{ACCOUNT}:role/spawn/x", {"iam:PermissionsBoundary": ADMIN}),
    ("CreateRole with a spawn-boundary of another account", "iam:CreateRole", "role",
     f"arn:aws:iam::{ACCOUNT}:role/spawn/x",
     {"iam:PermissionsBoundary": boundary_arn(OTHER_ACCOUNT)}),
    ("CreateRole outside /spawn/, even with the boundary", "iam:CreateRole", "role",
     f"arn:aws:iam::{ACCOUNT}:role/admin-x", {"iam:PermissionsBoundary": BOUNDARY}),
    ("AttachRolePolicy AdministratorAccess to a spawn role without the boundary",
     "iam:AttachRolePolicy", "role", SPAWN_ROLE, {"iam:PolicyARN": ADMIN}),
    ("PutRolePolicy on a spawn role without the boundary", "iam:PutRolePolicy", "role",
     SPAWN_ROLE, {}),
    ("PutRolePermissionsBoundary to another policy", "iam:PutRolePermissionsBoundary", "role",
     SPAWN_ROLE, {"iam:PermissionsBoundary": ADMIN}),
    ("DeleteRolePermissionsBoundary", "iam:DeleteRolePermissionsBoundary", "role", SPAWN_ROLE,
     {"iam:PermissionsBoundary": BOUNDARY}),
    ("edit the boundary policy", "iam:CreatePolicyVersion", "policy", BOUNDARY, {}),
    ("switch the boundary's version", "iam:SetDefaultPolicyVersion", "policy", BOUNDARY, {}),
    ("delete the boundary", "iam:DeletePolicy", "policy", BOUNDARY, {}),
    ("make a spawn role trust someone else", "iam:UpdateAssumeRolePolicy", "role", SPAWN_ROLE, {}),
    ("tag a spawn role with a foreign key", "iam:TagRole", "role", SPAWN_ROLE, _tags({"team": "x"})),
    ("create a user", "iam:CreateUser", "user", f"arn:aws:iam::{ACCOUNT}:user/backdoor", {}),
    ("S3 GetObject in a bucket that is not spawn's", "s3:GetObject", "object",
     "arn:aws:s3:::payroll/2026/salaries.csv", {}),
    ("S3 PutObject elsewhere", "s3:PutObject", "object", "arn:aws:s3:::website/index.html", {}),
    ("create any bucket", "s3:CreateBucket", "bucket", "arn:aws:s3:::anything", {}),
    ("list the objects of another bucket", "s3:ListBucket", "bucket", "arn:aws:s3:::payroll", {}),
    ("a SecureString parameter outside /aws/service", "ssm:GetParameter", "parameter",
     f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/prod/db-password", {}),
    ("terminate an unmanaged instance", "ec2:TerminateInstances", "instance", INSTANCE, {}),
    ("stop an instance marked managed=false", "ec2:StopInstances", "instance", INSTANCE,
     {"ec2:ResourceTag/spawn:managed": "false"}),
    ("start an unmanaged instance", "ec2:StartInstances", "instance", INSTANCE, {}),
    ("read an unmanaged console", "ec2:GetConsoleOutput", "instance", INSTANCE, {}),
    ("change an unmanaged instance's attributes", "ec2:ModifyInstanceAttribute", "instance", INSTANCE, {}),
    ("adopt an unmanaged instance by tagging it", "ec2:CreateTags", "instance", INSTANCE,
     _tags({"spawn:managed": "true"})),
    ("delete tags of an unmanaged instance", "ec2:DeleteTags", "instance", INSTANCE,
     {"aws:TagKeys": ["spawn:managed"]}),
    ("a foreign tag key on a managed instance", "ec2:CreateTags", "instance", INSTANCE,
     {**MANAGED, **_tags({"Owner": "mallory"})}),
    ("foreign tag keys at launch", "ec2:CreateTags", "instance", INSTANCE,
     {"ec2:CreateAction": "RunInstances", **_tags({**LAUNCH_TAGS, "Owner": "x"})}),
    ("adopt a foreign security group by tagging it", "ec2:CreateTags", "security-group", GROUP,
     _tags({"spawn:managed": "true"})),
    ("open a group spawn did not create", "ec2:AuthorizeSecurityGroupIngress", "security-group",
     GROUP, {}),
    ("delete a group spawn did not create", "ec2:DeleteSecurityGroup", "security-group", GROUP, {}),
    ("create an untagged group", "ec2:CreateSecurityGroup", "security-group", GROUP, {}),
    ("launch an untagged instance", "ec2:RunInstances", "instance", INSTANCE, {}),
    ("launch with volumes marked unmanaged", "ec2:RunInstances", "volume", VOLUME,
     _tags({"spawn:managed": "false"})),
    ("import an untagged key pair", "ec2:ImportKeyPair", "key-pair", KEY_PAIR, {}),
    ("delete someone's key pair", "ec2:DeleteKeyPair", "key-pair", KEY_PAIR, {}),
    ("pass a role outside /spawn/", "iam:PassRole", "role", f"arn:aws:iam::{ACCOUNT}:role/Admin",
     {"iam:PassedToService": "ec2.amazonaws.com"}),
    ("pass a spawn role to Lambda", "iam:PassRole", "role", SPAWN_ROLE,
     {"iam:PassedToService": "lambda.amazonaws.com"}),
    ("simulate another user's policies", "iam:SimulatePrincipalPolicy", "user",
     f"arn:aws:iam::{ACCOUNT}:user/bob", {}),
]


def _decide(action: str, resource_type: str | None, resource: str,
            context: dict[str, Any]) -> Any:
    return evaluate([scoped_policy()], action, resource, _req(action, resource_type, context))


@pytest.mark.parametrize(("case", "action", "resource_type", "resource", "context"), ALLOWED,
                         ids=[c[0] for c in ALLOWED])
def test_what_spawn_does_is_allowed(case: str, action: str, resource_type: str | None,
                                    resource: str, context: dict[str, Any]) -> None:
    decision = _decide(action, resource_type, resource, context)
    assert decision.effect is Effect.ALLOW, f"{case}: {decision}"


@pytest.mark.parametrize(("case", "action", "resource_type", "resource", "context"), DENIED,
                         ids=[c[0] for c in DENIED])
def test_escalations_are_denied(case: str, action: str, resource_type: str | None,
                                resource: str, context: dict[str, Any]) -> None:
    decision = _decide(action, resource_type, resource, context)
    assert decision.effect is not Effect.ALLOW, f"{case}: {decision}"


def test_the_guard_rails_are_explicit() -> None:
    for action, rtype, resource, context in (
            ("iam:DeleteRolePermissionsBoundary", "role", SPAWN_ROLE,
             {"iam:PermissionsBoundary": BOUNDARY}),
            ("iam:CreatePolicyVersion", "policy", BOUNDARY, {}),
            ("iam:UpdateAssumeRolePolicy", "role", SPAWN_ROLE, {})):
        assert _decide(action, rtype, resource, context).effect is Effect.EXPLICIT_DENY, action


def test_every_write_spawn_declares_is_in_the_matrix() -> None:
    writes = {a for a in permissions.required_actions("cli")
              if not a.startswith(("ec2:Describe", "iam:Get", "iam:List"))}
    assert writes - {case[1] for case in ALLOWED} == set()


# ---- the boundary caps what a role created under it can do, whatever its own policy says ----

ROLE_CALLER = {"aws:PrincipalArn": SPAWN_ROLE, "aws:PrincipalAccount": ACCOUNT,
               "aws:RequestedRegion": "us-east-1"}
EVERYTHING = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


@pytest.mark.parametrize(("action", "resource_type", "resource", "context"), [
    ("iam:CreateUser", "user", f"arn:aws:iam::{ACCOUNT}:user/backdoor", {}),
    ("iam:PassRole", "role", f"arn:aws:iam::{ACCOUNT}:role/Admin",
     {"iam:PassedToService": "ec2.amazonaws.com"}),
    ("ec2:RunInstances", "instance", INSTANCE, _tags(LAUNCH_TAGS)),
    ("ec2:TerminateInstances", "instance", INSTANCE, {}),
    ("ec2:AuthorizeSecurityGroupIngress", "security-group", GROUP, {}),
    ("kms:Decrypt", "key", f"arn:aws:kms:us-east-1:{ACCOUNT}:key/k", {}),
])
def test_an_administrator_role_under_the_boundary_cannot(action: str, resource_type: str,
                                                         resource: str,
                                                         context: dict[str, Any]) -> None:
    ctx = {**_req(action, resource_type, context), **ROLE_CALLER}
    del ctx["aws:username"]  # a role session has no user name
    decision = evaluate([EVERYTHING], action, resource, ctx, boundary=[boundary_document()])
    assert decision.effect is not Effect.ALLOW, decision
    assert evaluate([EVERYTHING], action, resource, ctx).effect is Effect.ALLOW  # without it


def test_the_templates_work_under_the_boundary() -> None:
    ctx = {**_req("s3:GetObject", "object", {}), **ROLE_CALLER}
    del ctx["aws:username"]
    decision = evaluate([EVERYTHING], "s3:GetObject", "arn:aws:s3:::data/x", ctx,
                        boundary=[boundary_document()])
    assert decision.effect is Effect.ALLOW
