"""Create or reuse the instance role and profile a plan describes (boto3), and undo it.

Idempotent and safe under concurrency: every create treats ``EntityAlreadyExists`` as success,
``PutRolePolicy``/``AttachRolePolicy`` are idempotent, and adding the role to its profile
re-reads the profile on ``LimitExceeded`` (another launch added it first). A profile found
without its role is repaired. No sleeps here: IAM's propagation delay is handled where it shows,
around RunInstances (``retry_on_profile_propagation``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from spored.errors import (
    AwsError,
    PermissionDenied,
    ValidationError,
    aws_error_code,
    from_aws,
    is_aws_exception,
)

from . import document as doclib
from .agent_policy import AGENT_ACTIONS, agent_policy_document
from .compose import POLICY_AGENT, SPAWN_POLICY_NAMES, IamPlan


@dataclass(frozen=True)
class Created:
    kind: str          # "role" | "instance-profile" | "inline-policy" | "managed-attachment"
    name: str
    detail: str = ""
    reusable: bool = False

    def describe(self) -> str:
        return f"{self.kind} {self.name}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Provisioned:
    role_name: str
    profile_name: str
    profile_arn: str
    created: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    resources: list[Created] = field(default_factory=list)
    region: str | None = None

    def run_instances_profile(self) -> dict[str, str]:
        """The RunInstances ``IamInstanceProfile`` argument: the ARN goes in the Arn field."""
        return {"Arn": self.profile_arn}

    def to_dict(self) -> dict[str, Any]:
        return {"role_name": self.role_name, "profile_name": self.profile_name,
                "profile_arn": self.profile_arn, "created": list(self.created),
                "warnings": list(self.warnings)}


def _decode_policy(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    text = unquote(str(value))
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def missing_statement_message(role: str) -> str:
    return (f"role {role} lacks the agent's permissions ({', '.join(AGENT_ACTIONS)}), so the "
            "instance could not end itself. Add this statement to one of its policies, or put the "
            "whole document as an inline policy (`spawn iam agent-policy --json`):\n"
            + json.dumps(agent_policy_document()["Statement"], indent=2))


class _Provisioner:
    def __init__(self, plan: IamPlan, region: str | None) -> None:
        from controller.aws import client

        self.plan = plan
        self.region = region
        self.iam = client("iam", region)
        self.result = Provisioned(role_name=plan.role_name, profile_name=plan.profile_name,
                                  profile_arn="", region=region)

    def record(self, item: Created) -> None:
        self.result.resources.append(item)
        self.result.created.append(item.describe())

    def call(self, action: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as exc:
            if is_aws_exception(exc):
                raise from_aws(exc, action=action) from exc
            raise

    # -- role ------------------------------------------------------------------------------
    def get_role(self) -> dict[str, Any] | None:
        try:
            role: dict[str, Any] = self.iam.get_role(RoleName=self.plan.role_name)["Role"]
            return role
        except Exception as exc:
            if aws_error_code(exc) == "NoSuchEntity":
                return None
            if is_aws_exception(exc):
                raise from_aws(exc, action=f"reading role {self.plan.role_name}") from exc
            raise

    def create_role(self) -> bool:
        p = self.plan
        kwargs: dict[str, Any] = {
            "RoleName": p.role_name, "Path": p.path,
            "AssumeRolePolicyDocument": json.dumps(p.trust_policy),
            "Description": "spawn instance role (content " + p.content_hash[:12] + ")"
                           if not p.named else "spawn instance role",
            "Tags": [{"Key": k, "Value": v} for k, v in p.tags.items()],
        }
        if p.permissions_boundary:
            kwargs["PermissionsBoundary"] = p.permissions_boundary
        try:
            self.iam.create_role(**kwargs)
        except Exception as exc:
            if aws_error_code(exc) == "EntityAlreadyExists":
                return False  # a concurrent launch created it: same content, same role
            if is_aws_exception(exc):
                error = from_aws(exc, action=f"creating role {p.role_name}")
                if not p.permissions_boundary and isinstance(error, PermissionDenied):
                    error.hint = ("with the scoped CLI policy, roles can only be created with "
                                  "spawn's permissions boundary: an administrator runs "
                                  "`spawn iam setup` once in this account")
                raise error from exc
            raise
        self.record(Created("role", p.role_name, f"path {p.path}", reusable=not p.named))
        return True

    def role_documents(self) -> list[dict[str, Any]]:
        """Every policy document attached to the role (inline and managed default versions)."""
        name = self.plan.role_name
        docs: list[dict[str, Any]] = []
        pages = self.iam.get_paginator("list_role_policies").paginate(RoleName=name)
        for page in pages:
            for policy in page["PolicyNames"]:
                got = self.iam.get_role_policy(RoleName=name, PolicyName=policy)
                docs.append(_decode_policy(got["PolicyDocument"]))
        attached = self.iam.get_paginator("list_attached_role_policies").paginate(RoleName=name)
        for page in attached:
            for item in page["AttachedPolicies"]:
                arn = item["PolicyArn"]
                version = self.iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
                got = self.iam.get_policy_version(PolicyArn=arn, VersionId=version)
                docs.append(_decode_policy(got["PolicyVersion"]["Document"]))
        return docs

    def ensure_boundary(self, existing_role: dict[str, Any] | None) -> None:
        """Set the plan's boundary on an existing role, first: with the scoped CLI policy every
        later write on the role is allowed only once it carries spawn's boundary."""
        p = self.plan
        if not p.permissions_boundary or existing_role is None:
            return
        current = (existing_role.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
        if current != p.permissions_boundary:
            self.call(f"setting the permissions boundary of role {p.role_name}",
                      self.iam.put_role_permissions_boundary, RoleName=p.role_name,
                      PermissionsBoundary=p.permissions_boundary)

    def put_policies(self, existing_role: dict[str, Any] | None) -> None:
        p = self.plan
        self.ensure_boundary(existing_role)
        for name, doc in p.inline_policies.items():
            self.call(f"putting inline policy {name} on role {p.role_name}",
                      self.iam.put_role_policy, RoleName=p.role_name, PolicyName=name,
                      PolicyDocument=json.dumps(doc))
        if p.named and existing_role is not None:
            # Bring a named role in line: drop spawn's inline policies no longer asked for.
            current = self.iam.list_role_policies(RoleName=p.role_name)["PolicyNames"]
            for stale in set(current) & set(SPAWN_POLICY_NAMES) - set(p.inline_policies):
                self.call(f"deleting stale inline policy {stale}", self.iam.delete_role_policy,
                          RoleName=p.role_name, PolicyName=stale)
        for arn in p.managed_policy_arns:
            self.call(f"attaching {arn} to role {p.role_name}", self.iam.attach_role_policy,
                      RoleName=p.role_name, PolicyArn=arn)

    def check_foreign_role(self) -> None:
        """A pre-existing role used as-is: it must grant the agent's actions, in policies that lint
        clean (or --force). A statement AWS never matches, such as the ``aws:ARN`` self-scoping
        once circulated for agents like this one, grants the action on paper only."""
        docs = self.role_documents()
        missing = [a for a in AGENT_ACTIONS if not doclib.allows(docs, a)]
        problems = [f"lacks {', '.join(missing)}"] if missing else []
        problems += self.lint_errors(docs)
        if not problems:
            return
        message = missing_statement_message(self.plan.role_name)
        if not missing:
            message = (f"role {self.plan.role_name}'s policies have lint errors "
                       f"({'; '.join(problems)}), so AWS may not grant the agent what they seem to "
                       "(an unknown condition key makes its condition false). Replace the agent's "
                       "statements with `spawn iam agent-policy --json`:\n"
                       + json.dumps(agent_policy_document()["Statement"], indent=2))
        if not self.plan.force:
            raise ValidationError("--iam-role", message,
                                  hint="or pass --force to launch anyway (the instance will not "
                                       "be able to end itself)")
        self.result.warnings.append(
            f"--force: role {self.plan.role_name} {'; '.join(problems)}; THE INSTANCE "
            f"{'WILL' if missing else 'MAY'} NOT BE ABLE TO STOP OR TERMINATE ITSELF (TTL, idle "
            "and completion will not end it)")

    @staticmethod
    def lint_errors(docs: list[dict[str, Any]]) -> list[str]:
        from .lint import lint_available, lint_document

        if not lint_available():
            return []
        return [f"{f.issue}: {f.detail}" for doc in docs for f in lint_document(doc).errors]

    # -- profile ---------------------------------------------------------------------------
    def ensure_profile(self) -> None:
        p = self.plan
        profile = self.existing_profile_for_named_role() if p.named else None
        if profile is None:
            profile = self.get_or_create_profile(p.profile_name)
        self.result.profile_name = profile["InstanceProfileName"]
        self.result.profile_arn = profile["Arn"]
        roles = [r["RoleName"] for r in profile.get("Roles", [])]
        if p.role_name in roles:
            return
        if roles:
            raise AwsError(f"instance profile {profile['InstanceProfileName']} holds role "
                           f"{roles[0]}, not {p.role_name}; an instance profile holds one role",
                           aws_code="LimitExceeded",
                           hint="remove that role from the profile, or delete the profile")
        try:
            self.iam.add_role_to_instance_profile(
                InstanceProfileName=profile["InstanceProfileName"], RoleName=p.role_name)
        except Exception as exc:
            if aws_error_code(exc) != "LimitExceeded":
                if is_aws_exception(exc):
                    raise from_aws(exc, action=f"adding role {p.role_name} to its profile") from exc
                raise
            # Another launch added a role first: fine if it is ours.
            again = self.iam.get_instance_profile(
                InstanceProfileName=profile["InstanceProfileName"])["InstanceProfile"]
            if p.role_name not in [r["RoleName"] for r in again.get("Roles", [])]:
                raise from_aws(exc, action=f"adding role {p.role_name} to its profile") from exc
            return
        self.record(Created("profile-role", profile["InstanceProfileName"],
                            f"role {p.role_name} added", reusable=not p.named))

    def existing_profile_for_named_role(self) -> dict[str, Any] | None:
        got = self.iam.list_instance_profiles_for_role(RoleName=self.plan.role_name)
        profiles: list[dict[str, Any]] = got["InstanceProfiles"]
        return profiles[0] if profiles else None

    def get_or_create_profile(self, name: str) -> dict[str, Any]:
        try:
            profile: dict[str, Any] = self.iam.get_instance_profile(
                InstanceProfileName=name)["InstanceProfile"]
            return profile
        except Exception as exc:
            if aws_error_code(exc) != "NoSuchEntity":
                if is_aws_exception(exc):
                    raise from_aws(exc, action=f"reading instance profile {name}") from exc
                raise
        try:
            created: dict[str, Any] = self.iam.create_instance_profile(
                InstanceProfileName=name, Path=self.plan.path,
                Tags=[{"Key": k, "Value": v} for k, v in self.plan.tags.items()])["InstanceProfile"]
        except Exception as exc:
            if aws_error_code(exc) == "EntityAlreadyExists":
                again: dict[str, Any] = self.iam.get_instance_profile(
                    InstanceProfileName=name)["InstanceProfile"]
                return again
            if is_aws_exception(exc):
                raise from_aws(exc, action=f"creating instance profile {name}") from exc
            raise
        self.record(Created("instance-profile", name, f"path {self.plan.path}",
                            reusable=not self.plan.named))
        return created

    # -- whole -----------------------------------------------------------------------------
    def run(self) -> Provisioned:
        p = self.plan
        role = self.get_role()
        created_now = False
        if role is None:
            created_now = self.create_role()
        if not p.named or created_now or p.has_policy_flags:
            self.put_policies(None if created_now else role)
        elif _spawn_created(role):
            # spawn made this named role: keep the agent's policy on it, whatever happened since.
            self.ensure_boundary(role)
            self.call(f"putting inline policy {POLICY_AGENT} on role {p.role_name}",
                      self.iam.put_role_policy, RoleName=p.role_name, PolicyName=POLICY_AGENT,
                      PolicyDocument=json.dumps(p.inline_policies[POLICY_AGENT]))
        else:
            self.check_foreign_role()
        self.ensure_profile()
        return self.result


def _spawn_created(role: dict[str, Any] | None) -> bool:
    if role is None:
        return False
    tags = {t["Key"]: t["Value"] for t in role.get("Tags", []) or []}
    return tags.get("spawn:managed") == "true"


def provision(plan: IamPlan, *, region: str | None = None) -> Provisioned:
    """Create (or reuse) the role and instance profile; ``created`` lists what this call made."""
    return _Provisioner(plan, region).run()


def delete_role_completely(iam: Any, role_name: str) -> list[str]:
    """Remove a role from its profiles, delete its inline policies, detach managed ones, delete it."""
    done: list[str] = []
    for profile in iam.list_instance_profiles_for_role(RoleName=role_name)["InstanceProfiles"]:
        iam.remove_role_from_instance_profile(InstanceProfileName=profile["InstanceProfileName"],
                                              RoleName=role_name)
        done.append(f"removed role {role_name} from profile {profile['InstanceProfileName']}")
    for page in iam.get_paginator("list_role_policies").paginate(RoleName=role_name):
        for name in page["PolicyNames"]:
            iam.delete_role_policy(RoleName=role_name, PolicyName=name)
            done.append(f"deleted inline policy {name} of role {role_name}")
    for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=role_name):
        for item in page["AttachedPolicies"]:
            iam.detach_role_policy(RoleName=role_name, PolicyArn=item["PolicyArn"])
            done.append(f"detached {item['PolicyArn']} from role {role_name}")
    iam.delete_role(RoleName=role_name)
    done.append(f"deleted role {role_name}")
    return done


def rollback(provisioned: Provisioned, *, reusable_too: bool = False) -> list[str]:
    """Undo what ``provision`` created, except content-addressed roles/profiles (reusable by
    equal launches) unless ``reusable_too`` (a run that must leave nothing behind)."""
    from controller.aws import client

    iam = client("iam", provisioned.region)
    report: list[str] = []
    for item in reversed(provisioned.resources):
        if item.reusable and not reusable_too:
            report.append(f"kept {item.describe()}: content-addressed, reusable by equal launches")
            continue
        try:
            if item.kind == "role":
                report.extend(delete_role_completely(iam, item.name))
            elif item.kind == "instance-profile":
                profile = iam.get_instance_profile(InstanceProfileName=item.name)["InstanceProfile"]
                for role in profile.get("Roles", []):
                    iam.remove_role_from_instance_profile(InstanceProfileName=item.name,
                                                          RoleName=role["RoleName"])
                iam.delete_instance_profile(InstanceProfileName=item.name)
                report.append(f"deleted instance-profile {item.name}")
            elif item.kind == "profile-role":
                iam.remove_role_from_instance_profile(InstanceProfileName=item.name,
                                                      RoleName=provisioned.role_name)
                report.append(f"removed role {provisioned.role_name} from profile {item.name}")
        except Exception as exc:
            if aws_error_code(exc) == "NoSuchEntity":
                report.append(f"{item.describe()}: already gone")
                continue
            if is_aws_exception(exc):
                report.append(f"could not undo {item.describe()}: "
                              f"{from_aws(exc, action='rollback').message}")
                continue
            raise
    return report


def managed_documents(arns: tuple[str, ...], *, region: str | None = None
                      ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The default-version documents of managed policies (reads only): ARN -> document.

    A policy that does not exist is bad input (exit 2, before anything is created); one the caller
    may not read is left out with a warning (it can't be linted, the launch can go on).
    """
    from controller.aws import client

    iam = client("iam", region)
    documents: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    for arn in dict.fromkeys(arns):
        try:
            version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
            got = iam.get_policy_version(PolicyArn=arn, VersionId=version)
        except Exception as exc:
            code = aws_error_code(exc)
            if code == "NoSuchEntity":
                raise ValidationError("--iam-managed-policies", f"{arn}: no such managed policy "
                                                                 "in this account") from None
            if code in ("AccessDenied", "AccessDeniedException"):
                warnings.append(f"{arn}: not linted (no permission to read it: {code})")
                continue
            if is_aws_exception(exc):
                raise from_aws(exc, action=f"reading managed policy {arn}") from exc
            raise
        documents[arn] = _decode_policy(got["PolicyVersion"]["Document"])
    return documents, warnings


def lint_composed_role(plan: IamPlan, *, region: str | None = None) -> list[str]:
    """Lint the whole role a launch would create or update, before anything is created: the inline
    policies first (no AWS call), then the managed policies and the permissions boundary (reads).
    Raises ValidationError (exit 2) on an error; returns warnings.

    parliament is an optional extra (``spawn-spored[lint]``): without it a policy file is refused
    earlier (``load_checked_policy``), spawn's own documents (the agent's policy, the templates) are
    not linted at launch (the test suite lints each of them), and managed policies are reported as
    not linted rather than blocking a plain install from launching.
    """
    from .compose import POLICY_CUSTOM
    from .lint import lint_available, lint_role

    arns = plan.managed_policy_arns + ((plan.permissions_boundary,)
                                       if plan.permissions_boundary else ())
    if not lint_available():
        return [f"{', '.join(arns)}: not linted (parliament is not installed: "
                "pip install 'spawn-spored[lint]')"] if arns else []
    warnings = lint_role(plan.inline_policies, skip_warnings_of=(POLICY_CUSTOM,))
    if arns:
        documents, unread = managed_documents(arns, region=region)
        warnings += unread
        warnings += lint_role({}, documents, boundary=plan.permissions_boundary)
    return warnings
