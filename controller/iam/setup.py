"""`spawn iam setup`: create or update spawn's permissions boundary in one account (boto3).

Run once per account by someone with IAM admin rights (CreatePolicy, CreatePolicyVersion,
ListPolicyVersions, DeletePolicyVersion on ``policy/spawn/*``); the people who run spawn with
the scoped policy can then create roles, and only roles that carry this boundary.

Idempotent:

* absent: ``CreatePolicy`` under the path ``/spawn/``;
* present with the same document as its default version: nothing to do;
* present with another document: ``CreatePolicyVersion`` with ``SetAsDefault``. A managed policy
  keeps at most 5 versions (IAM User Guide, "Versioning IAM policies" and "IAM and AWS STS
  quotas"), so when 5 exist the oldest non-default version is deleted first.

Every role that already carries the boundary sees the new version at once: updating it never
needs the roles to be touched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from spored.errors import AwsError, aws_error_code, from_aws

from . import document as doclib
from .boundary import BOUNDARY_DESCRIPTION, BOUNDARY_NAME, BOUNDARY_PATH, boundary_arn, boundary_document

MAX_POLICY_VERSIONS = 5  # IAM quotas: versions of a managed policy


@dataclass
class SetupResult:
    arn: str
    state: str                       # "created" | "updated" | "unchanged" (what was, or would be)
    dry_run: bool
    steps: list[str] = field(default_factory=list)
    document: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"boundary_arn": self.arn, "state": self.state, "dry_run": self.dry_run,
                "steps": list(self.steps), "document": self.document}


def _decode(value: Any) -> Any:
    return value if isinstance(value, dict) else json.loads(unquote(str(value)))


def _partition(caller_arn: str) -> str:
    parts = caller_arn.split(":")
    return parts[1] if len(parts) > 2 and parts[1] else "aws"


def _call(action: str, fn: Any, **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except Exception as exc:
        if isinstance(getattr(exc, "response", None), dict):
            raise from_aws(exc, action=action) from exc
        raise


def setup_boundary(*, dry_run: bool = False) -> SetupResult:
    """Create or update the boundary in the caller's account; with ``dry_run`` only read."""
    from controller.aws import client

    ident = _call("reading the caller identity", client("sts").get_caller_identity)
    partition = _partition(str(ident["Arn"]))
    arn = boundary_arn(str(ident["Account"]), partition=partition)
    wanted = boundary_document(partition=partition)
    iam = client("iam")
    result = SetupResult(arn=arn, state="unchanged", dry_run=dry_run, document=wanted)
    verb = "would " if dry_run else ""
    try:
        policy = iam.get_policy(PolicyArn=arn)["Policy"]
    except Exception as exc:
        if aws_error_code(exc) != "NoSuchEntity":
            if isinstance(getattr(exc, "response", None), dict):
                raise from_aws(exc, action=f"reading {arn}") from exc
            raise
        policy = None
    if policy is None:
        result.state = "created"
        result.steps.append(f"{verb}create policy {arn} "
                            f"({doclib.compact_size(wanted)} characters)")
        if not dry_run:
            _call(f"creating {arn}", iam.create_policy, PolicyName=BOUNDARY_NAME,
                  Path=BOUNDARY_PATH, PolicyDocument=json.dumps(wanted),
                  Description=BOUNDARY_DESCRIPTION,
                  Tags=[{"Key": "spawn:managed", "Value": "true"}])
        return result
    default = str(policy["DefaultVersionId"])
    current = _decode(_call(f"reading {arn}", iam.get_policy_version, PolicyArn=arn,
                            VersionId=default)["PolicyVersion"]["Document"])
    if doclib.canonical(current) == doclib.canonical(wanted):
        result.steps.append(f"{arn} version {default} is already current")
        return result
    result.state = "updated"
    versions = _call(f"listing the versions of {arn}", iam.list_policy_versions,
                     PolicyArn=arn)["Versions"]
    if len(versions) >= MAX_POLICY_VERSIONS:
        older = sorted((v for v in versions if not v.get("IsDefaultVersion")),
                       key=lambda v: v["CreateDate"])
        if not older:  # pragma: no cover - IAM always has a default among 5 versions
            raise AwsError(f"{arn} has {len(versions)} versions and none is deletable",
                           aws_code="LimitExceeded")
        oldest = str(older[0]["VersionId"])
        result.steps.append(f"{verb}delete version {oldest} (the oldest; IAM keeps at most "
                            f"{MAX_POLICY_VERSIONS})")
        if not dry_run:
            _call(f"deleting version {oldest} of {arn}", iam.delete_policy_version,
                  PolicyArn=arn, VersionId=oldest)
    result.steps.append(f"{verb}add a new default version of {arn} (replacing {default})")
    if not dry_run:
        _call(f"updating {arn}", iam.create_policy_version, PolicyArn=arn,
              PolicyDocument=json.dumps(wanted), SetAsDefault=True)
    return result


def account_boundary(iam: Any, account: str, *, partition: str = "aws") -> str | None:
    """spawn's boundary ARN when ``spawn iam setup`` has created it in ``account``, else None.

    An AccessDenied on the read also gives None: the launch then proceeds as it would without
    setup, and IAM itself refuses CreateRole if the caller's policy requires the boundary.
    """
    arn = boundary_arn(account, partition=partition)
    try:
        iam.get_policy(PolicyArn=arn)
    except Exception as exc:
        if aws_error_code(exc) in {"NoSuchEntity", "AccessDenied", "AccessDeniedException"}:
            return None
        if isinstance(getattr(exc, "response", None), dict):
            raise from_aws(exc, action=f"looking for spawn's permissions boundary {arn}") from exc
        raise
    return arn
