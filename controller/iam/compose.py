"""Compose an instance role from a request (pure): documents, name, limits, warnings.

The role name is derived from the *content* of everything that defines the role's permissions
(inline documents, managed policy ARNs, permissions boundary, trust policy, path): equal requests
share one role, any change yields a new one. A file path never enters the name.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from spored.contract import MANAGED_VALUE, TAG_MANAGED
from spored.errors import ValidationError

from . import document as doclib
from .agent_policy import agent_policy_document
from .templates import POLICY_VERSION, TemplateRef, statements

ROLE_PATH = "/spawn/"
ROLE_PREFIX = "spawn-"
HASH_CHARS = 12
TAG_CONTENT_HASH = "spawn:iam-content"
TAG_ROLE_KIND = "spawn:iam-kind"

# AWS IAM quotas (IAM User Guide, "IAM and AWS STS quotas"): checked before any call.
MAX_INLINE_CHARS = 10_240     # aggregate inline policy size per role, whitespace excluded
MAX_MANAGED_POLICIES = 10     # managed policies attached per role (default quota)

POLICY_AGENT = "spawn-agent"
POLICY_TEMPLATES = "spawn-templates"
POLICY_CUSTOM = "spawn-custom"
SPAWN_POLICY_NAMES = (POLICY_AGENT, POLICY_TEMPLATES, POLICY_CUSTOM)

TRUST_POLICY: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [{
        "Effect": "Allow",
        "Principal": {"Service": "ec2.amazonaws.com"},
        "Action": "sts:AssumeRole",
    }],
}

POLICY_ARN_RE = re.compile(
    r"^arn:(aws|aws-cn|aws-us-gov):iam::(aws|\d{12}):policy/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,128}$")
POLICY_ARN_FORM = ("arn:PARTITION:iam::ACCOUNT:policy/[PATH/]NAME with PARTITION aws, aws-cn or "
                   "aws-us-gov and ACCOUNT `aws` or 12 digits")
ROLE_NAME_RE = re.compile(r"^[\w+=,.@-]{1,64}$")
_BROAD_MANAGED = ("FullAccess", "AdministratorAccess", "PowerUserAccess")


@dataclass(frozen=True)
class IamRequest:
    """What the user asked for, validated (no AWS)."""

    templates: tuple[TemplateRef, ...] = ()
    policy_file: str | None = None
    custom_document: dict[str, Any] | None = None
    managed_policy_arns: tuple[str, ...] = ()
    role_name: str | None = None
    permissions_boundary: str | None = None
    force: bool = False
    lint_warnings: tuple[str, ...] = ()
    # spawn's boundary, found in the account (``spawn iam setup`` ran there): attached to every
    # role spawn creates or updates unless --iam-permissions-boundary names another. Not a
    # policy flag: it never makes spawn rewrite a role it did not create.
    account_boundary: str | None = None

    @property
    def has_policy_flags(self) -> bool:
        return bool(self.templates or self.custom_document is not None
                    or self.managed_policy_arns or self.permissions_boundary)

    @property
    def boundary(self) -> str | None:
        return self.permissions_boundary or self.account_boundary


@dataclass(frozen=True)
class IamPlan:
    role_name: str
    profile_name: str
    path: str
    named: bool
    inline_policies: dict[str, dict[str, Any]]
    managed_policy_arns: tuple[str, ...]
    permissions_boundary: str | None
    trust_policy: dict[str, Any]
    content_hash: str
    tags: dict[str, str]
    has_policy_flags: bool
    force: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def inline_chars(self) -> int:
        return sum(doclib.compact_size(d) for d in self.inline_policies.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "role_name": self.role_name, "profile_name": self.profile_name, "path": self.path,
            "named": self.named, "content_hash": self.content_hash,
            "inline_policies": self.inline_policies,
            "managed_policy_arns": list(self.managed_policy_arns),
            "permissions_boundary": self.permissions_boundary,
            "trust_policy": self.trust_policy, "tags": self.tags,
            "inline_chars": self.inline_chars, "warnings": list(self.warnings),
        }


def validate_policy_arn(arn: str, *, field: str) -> str:
    value = arn.strip()
    if not POLICY_ARN_RE.match(value):
        raise ValidationError(field, f"{arn!r} is not a policy ARN; accepted: {POLICY_ARN_FORM}")
    return value


def validate_role_name(name: str, *, field: str = "--iam-role") -> str:
    value = name.strip()
    if not ROLE_NAME_RE.match(value):
        raise ValidationError(field, f"{name!r} is not a role name; accepted: 1-64 characters "
                                     "from letters, digits and + = , . @ _ -")
    return value


def templates_document(refs: tuple[TemplateRef, ...], *, partition: str = "aws") -> dict[str, Any]:
    """All template entries merged into one document, Sids made unique."""
    out: list[dict[str, Any]] = []
    used: dict[str, int] = {}
    for ref in refs:
        for stmt in statements(ref, partition=partition):
            sid = stmt["Sid"]
            used[sid] = used.get(sid, 0) + 1
            out.append(stmt if used[sid] == 1 else {**stmt, "Sid": f"{sid}{used[sid]}"})
    return {"Version": POLICY_VERSION, "Statement": out}


def content_hash(inline: dict[str, dict[str, Any]], managed: tuple[str, ...],
                 boundary: str | None) -> str:
    material = {"path": ROLE_PATH, "trust": TRUST_POLICY, "inline": inline,
                "managed": sorted(managed), "boundary": boundary}
    return hashlib.sha256(doclib.canonical(material).encode()).hexdigest()


def _warnings(request: IamRequest) -> list[str]:
    out: list[str] = []
    for ref in request.templates:
        t = ref.template
        if t.full_access:
            out.append(f"least privilege: {ref.text} grants every {t.service} action "
                       f"({t.service}:*); prefer {t.service}:ReadOnly or {t.service}:WriteOnly")
        if ref.unscoped:
            out.append(f"least privilege: {ref.text} applies to every resource (\"*\"); narrow it "
                       f"with @SCOPE, e.g. {t.name}@NAME (see `spawn launch --help`)")
    for arn in request.managed_policy_arns:
        name = arn.rsplit("/", 1)[-1]
        if any(word in name for word in _BROAD_MANAGED):
            out.append(f"least privilege: managed policy {name} is broad; prefer a scoped template "
                       "or --iam-policy-file")
    if request.custom_document is not None:
        for stmt in doclib.statements(request.custom_document):
            actions = stmt.get("Action", [])
            actions = [actions] if isinstance(actions, str) else actions
            if stmt.get("Effect") == "Allow" and any(a == "*" or a.endswith(":*") for a in actions) \
                    and stmt.get("Resource") in ("*", ["*"]):
                out.append(f"least privilege: {request.policy_file} allows {', '.join(actions)} "
                           "on every resource")
    if request.custom_document is not None and request.account_boundary \
            and not request.permissions_boundary:
        from .boundary import outside_boundary

        capped = outside_boundary(request.custom_document)
        if capped:
            out.append(f"{request.policy_file}: {', '.join(capped)} lie outside spawn's "
                       "permissions boundary (`spawn iam setup`), so the role cannot use them")
    out.extend(request.lint_warnings)
    return out


def plan(request: IamRequest, *, partition: str = "aws") -> IamPlan:
    """Compose the role: the agent's policy always, then templates, file, managed, boundary."""
    inline: dict[str, dict[str, Any]] = {POLICY_AGENT: agent_policy_document(partition=partition)}
    if request.templates:
        # Sorted: the same templates in another order are the same permissions, the same role.
        ordered = tuple(sorted(request.templates, key=lambda ref: ref.text))
        inline[POLICY_TEMPLATES] = templates_document(ordered, partition=partition)
    if request.custom_document is not None:
        inline[POLICY_CUSTOM] = request.custom_document
    managed = tuple(dict.fromkeys(request.managed_policy_arns))
    if len(managed) > MAX_MANAGED_POLICIES:
        raise ValidationError("--iam-managed-policies",
                              f"{len(managed)} managed policies exceed the AWS limit of "
                              f"{MAX_MANAGED_POLICIES} managed policies per role")
    total = sum(doclib.compact_size(d) for d in inline.values())
    if total > MAX_INLINE_CHARS:
        sizes = ", ".join(f"{name} {doclib.compact_size(d)}" for name, d in inline.items())
        raise ValidationError(
            "--iam-policy-file" if request.custom_document is not None else "--iam-policy",
            f"inline policies total {total} characters ({sizes}), over the AWS limit of "
            f"{MAX_INLINE_CHARS} characters per role (whitespace excluded)",
            hint="move permissions into a customer managed policy and pass it with "
                 "--iam-managed-policies")
    digest = content_hash(inline, managed, request.boundary)
    if request.role_name:
        role = validate_role_name(request.role_name)
        named = True
    else:
        role = f"{ROLE_PREFIX}{digest[:HASH_CHARS]}"
        named = False
    tags = {TAG_MANAGED: MANAGED_VALUE, TAG_CONTENT_HASH: digest[:HASH_CHARS],
            TAG_ROLE_KIND: "named" if named else "content"}
    return IamPlan(
        role_name=role, profile_name=role, path=ROLE_PATH, named=named, inline_policies=inline,
        managed_policy_arns=managed, permissions_boundary=request.boundary,
        trust_policy=TRUST_POLICY, content_hash=digest, tags=tags,
        has_policy_flags=request.has_policy_flags, force=request.force,
        warnings=_warnings(request))
