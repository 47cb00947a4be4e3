"""The 13 named policy templates and the `--iam-policy` scoping grammar (pure).

A template is a fixed action list (exactly the seed document's) that spawn turns into statements.
Alone, ``s3:ReadOnly`` keeps the seed's ``"Resource": "*"``. Followed by ``@SCOPE`` it is narrowed to
named resources; the scope's form depends on the service:

==================  =====================================  ======================================
service             ``@SCOPE`` form                        resources granted
==================  =====================================  ======================================
s3                  ``BUCKET`` or ``BUCKET/KEY-PATTERN``   bucket ARN (ListBucket, limited to the
                                                           prefix with ``s3:prefix``) and objects
                                                           ``BUCKET/KEY-PATTERN`` (``BUCKET/*``)
dynamodb            ``TABLE`` or ``table/TABLE``           the table and its indexes
sqs                 ``QUEUE``                              the queue
logs                ``LOG-GROUP``                          the group and its streams
ecr                 ``REPOSITORY``                         the repository (GetAuthorizationToken
                                                           stays on ``*``: it has no resource)
secretsmanager      ``SECRET-NAME``                        the secret (any AWS random suffix)
ssm                 ``/PARAMETER/PATH``                    the parameter(s)
==================  =====================================  ======================================

Names may contain ``*`` (e.g. ``sqs:WriteOnly@jobs-*``). Region and account are not known without
an AWS call, so they are ``*`` in the ARNs; the partition is ``aws`` unless another is asked for.
One scope per entry; repeat the template for several (``s3:ReadOnly@a,s3:ReadOnly@b``).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from spored.errors import ValidationError

POLICY_VERSION = "2012-10-17"
FIELD = "--iam-policy"


@dataclass(frozen=True)
class Template:
    name: str
    actions: tuple[str, ...]
    description: str
    seed_actions: tuple[str, ...] = ()
    note: str = ""

    @property
    def service(self) -> str:
        return self.name.split(":", 1)[0]

    @property
    def full_access(self) -> bool:
        return self.name.endswith(":FullAccess")


def _t(name: str, seed_actions: tuple[str, ...], description: str) -> Template:
    """A template from the seed's action list, minus names that are not IAM actions."""
    actions = tuple(a for a in seed_actions if a not in NOT_IAM_ACTIONS)
    notes = [NOT_IAM_ACTIONS[a] for a in seed_actions if a in NOT_IAM_ACTIONS]
    return Template(name, actions, description, seed_actions, " ".join(notes))


# API operations the seed lists as actions although IAM has no such action: granting them does
# nothing (parliament: UNKNOWN_ACTION). Dropped from what spawn grants, with the reason.
NOT_IAM_ACTIONS: dict[str, str] = {
    "sqs:SendMessageBatch": "sqs:SendMessageBatch is an API operation, not an IAM action: AWS "
                            "authorizes it with sqs:SendMessage (SQS Developer Guide, \"Amazon SQS "
                            "batch actions\"), so spawn grants sqs:SendMessage only.",
}


# Exactly the seed document's action lists (iam-policies-reference.md) as ``seed_actions``.
TEMPLATES: dict[str, Template] = {t.name: t for t in (
    _t("s3:FullAccess", ("s3:*",), "every S3 action"),
    _t("s3:ReadOnly", ("s3:GetObject", "s3:ListBucket"), "read objects, list buckets"),
    _t("s3:WriteOnly", ("s3:PutObject", "s3:PutObjectAcl"), "write objects and their ACLs"),
    _t("dynamodb:FullAccess", ("dynamodb:*",), "every DynamoDB action"),
    _t("dynamodb:ReadOnly", ("dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan",
                             "dynamodb:BatchGetItem"), "read items"),
    _t("dynamodb:WriteOnly", ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
                              "dynamodb:BatchWriteItem"), "write and delete items"),
    _t("sqs:FullAccess", ("sqs:*",), "every SQS action"),
    _t("sqs:ReadOnly", ("sqs:ReceiveMessage", "sqs:GetQueueAttributes"),
       "receive messages, read queue attributes"),
    _t("sqs:WriteOnly", ("sqs:SendMessage", "sqs:SendMessageBatch"), "send messages"),
    _t("logs:WriteOnly", ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"),
       "create log groups/streams and write events"),
    _t("ecr:ReadOnly", ("ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability",
                        "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"), "pull images"),
    _t("secretsmanager:ReadOnly", ("secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"),
       "read secrets"),
    _t("ssm:ReadOnly", ("ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"),
       "read parameters"),
)}

SCOPE_FORMS: dict[str, str] = {
    "s3": "BUCKET or BUCKET/KEY-PATTERN (e.g. s3:ReadOnly@my-bucket/data/*)",
    "dynamodb": "TABLE or table/TABLE (e.g. dynamodb:ReadOnly@table/my-table)",
    "sqs": "QUEUE (e.g. sqs:WriteOnly@my-queue)",
    "logs": "LOG-GROUP (e.g. logs:WriteOnly@/spawn/my-job)",
    "ecr": "REPOSITORY (e.g. ecr:ReadOnly@team/image)",
    "secretsmanager": "SECRET-NAME (e.g. secretsmanager:ReadOnly@prod/db)",
    "ssm": "/PARAMETER/PATH (e.g. ssm:ReadOnly@/my-app/*)",
}

FORM = ("comma-separated templates, each optionally narrowed with @SCOPE: "
        "TEMPLATE[@SCOPE][,TEMPLATE[@SCOPE]...]")

_S3_BUCKET = re.compile(r"^[a-z0-9*][a-z0-9.*-]{1,61}[a-z0-9*]$")
_S3_KEY = re.compile(r"^[\x21-\x7e]{1,1024}$")  # printable, no spaces
_NAME = {
    "dynamodb": re.compile(r"^[A-Za-z0-9_.*-]{1,255}$"),
    "sqs": re.compile(r"^[A-Za-z0-9_*-]{1,80}(\.fifo)?$"),
    "logs": re.compile(r"^[A-Za-z0-9_./#*-]{1,512}$"),
    "ecr": re.compile(r"^[a-z0-9*]+(?:[._/-][a-z0-9*]+)*$"),
    "secretsmanager": re.compile(r"^[A-Za-z0-9/_+=.@*-]{1,512}$"),
    "ssm": re.compile(r"^/?[A-Za-z0-9_./*-]{1,2048}$"),
}


@dataclass(frozen=True)
class TemplateRef:
    """One entry of ``--iam-policy``: a template and an optional resource scope."""

    template: Template
    scope: str | None = None

    @property
    def text(self) -> str:
        return self.template.name + (f"@{self.scope}" if self.scope else "")

    @property
    def unscoped(self) -> bool:
        return self.scope is None


def suggest(name: str) -> str | None:
    """The closest template name (case-insensitive), or None."""
    by_lower = {n.lower(): n for n in TEMPLATES}
    match = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.5)
    return by_lower[match[0]] if match else None


def get(name: str, *, field: str = FIELD) -> Template:
    template = TEMPLATES.get(name)
    if template is None:
        close = suggest(name)
        hint = f"did you mean {close}?" if close else None
        raise ValidationError(
            field, f"unknown template {name!r}; known: {', '.join(TEMPLATES)}",
            hint=hint or "run `spawn iam templates` to list them")
    return template


def parse_ref(entry: str, *, field: str = FIELD) -> TemplateRef:
    text = entry.strip()
    if not text:
        raise ValidationError(field, f"empty template entry; accepted: {FORM}")
    name, sep, scope = text.partition("@")
    template = get(name.strip(), field=field)
    if not sep:
        return TemplateRef(template)
    scope = scope.strip()
    if not scope:
        raise ValidationError(field, f"{text!r}: nothing after '@'; accepted scope for "
                                     f"{template.service}: {SCOPE_FORMS[template.service]}")
    _validate_scope(template, scope, field=field)
    return TemplateRef(template, scope)


def parse_list(value: str, *, field: str = FIELD) -> tuple[TemplateRef, ...]:
    """Parse ``--iam-policy``. Raises ValidationError naming the bad entry."""
    if not value.strip():
        raise ValidationError(field, f"empty list; accepted: {FORM}")
    refs = tuple(parse_ref(e, field=field) for e in value.split(","))
    seen: set[str] = set()
    unique: list[TemplateRef] = []
    for ref in refs:
        if ref.text not in seen:
            seen.add(ref.text)
            unique.append(ref)
    return tuple(unique)


def _validate_scope(template: Template, scope: str, *, field: str) -> None:
    service = template.service
    bad = ValidationError(field, f"{template.name}@{scope}: {scope!r} is not a valid {service} "
                                 f"scope; accepted: {SCOPE_FORMS[service]}")
    if scope.startswith("arn:"):
        raise ValidationError(field, f"{template.name}@{scope}: give a name, not an ARN; accepted: "
                                     f"{SCOPE_FORMS[service]} (use --iam-policy-file for full ARNs)")
    if service == "s3":
        bucket, _, key = scope.partition("/")
        if not _S3_BUCKET.match(bucket) or ".." in bucket or (key and not _S3_KEY.match(key)):
            raise bad
        return
    name = scope
    if service == "dynamodb" and name.startswith("table/"):
        name = name[len("table/"):]
    if not _NAME[service].match(name):
        raise bad


def _partition_arn(partition: str, service: str, region: str, account: str, resource: str) -> str:
    return f"arn:{partition}:{service}:{region}:{account}:{resource}"


def statements(ref: TemplateRef, *, partition: str = "aws", region: str = "*",
               account: str = "*") -> list[dict[str, Any]]:
    """The statements one template entry contributes."""
    template, scope = ref.template, ref.scope
    sid = _sid(template.name)
    actions = list(template.actions)
    if scope is None:
        return [{"Sid": sid, "Effect": "Allow", "Action": _one(actions), "Resource": "*"}]
    service = template.service
    if service == "s3":
        return _s3_statements(template, scope, sid, partition)
    if service == "dynamodb":
        table = scope[len("table/"):] if scope.startswith("table/") else scope
        arn = _partition_arn(partition, "dynamodb", region, account, f"table/{table}")
        return [{"Sid": sid, "Effect": "Allow", "Action": _one(actions),
                 "Resource": [arn, f"{arn}/index/*"]}]
    if service == "sqs":
        return [{"Sid": sid, "Effect": "Allow", "Action": _one(actions),
                 "Resource": _partition_arn(partition, "sqs", region, account, scope)}]
    if service == "logs":
        group = _partition_arn(partition, "logs", region, account, f"log-group:{scope}")
        return [{"Sid": sid, "Effect": "Allow", "Action": _one(actions),
                 "Resource": [f"{group}:*", f"{group}:log-stream:*"]}]
    if service == "ecr":
        scoped = [a for a in actions if a != "ecr:GetAuthorizationToken"]
        out: list[dict[str, Any]] = []
        if "ecr:GetAuthorizationToken" in actions:
            # GetAuthorizationToken has no resource type: it only works on "*".
            out.append({"Sid": sid + "Token", "Effect": "Allow",
                        "Action": "ecr:GetAuthorizationToken", "Resource": "*"})
        out.append({"Sid": sid, "Effect": "Allow", "Action": _one(scoped),
                    "Resource": _partition_arn(partition, "ecr", region, account,
                                               f"repository/{scope}")})
        return out
    if service == "secretsmanager":
        name = scope if scope.endswith("*") else f"{scope}-??????"
        return [{"Sid": sid, "Effect": "Allow", "Action": _one(actions),
                 "Resource": _partition_arn(partition, "secretsmanager", region, account,
                                            f"secret:{name}")}]
    if service == "ssm":
        path = scope.lstrip("/")
        return [{"Sid": sid, "Effect": "Allow", "Action": _one(actions),
                 "Resource": _partition_arn(partition, "ssm", region, account, f"parameter/{path}")}]
    raise AssertionError(f"no scoping rule for {service}")  # every template service has one


_S3_BUCKET_ACTIONS = {"s3:ListBucket"}


def _s3_statements(template: Template, scope: str, sid: str, partition: str) -> list[dict[str, Any]]:
    bucket, _, key = scope.partition("/")
    bucket_arn = f"arn:{partition}:s3:::{bucket}"
    object_arn = f"{bucket_arn}/{key or '*'}"
    actions = list(template.actions)
    if actions == ["s3:*"]:
        return [{"Sid": sid, "Effect": "Allow", "Action": "s3:*",
                 "Resource": [bucket_arn, object_arn]}]
    out: list[dict[str, Any]] = []
    bucket_actions = [a for a in actions if a in _S3_BUCKET_ACTIONS]
    object_actions = [a for a in actions if a not in _S3_BUCKET_ACTIONS]
    if object_actions:
        out.append({"Sid": sid + "Objects", "Effect": "Allow", "Action": _one(object_actions),
                    "Resource": object_arn})
    if bucket_actions:
        stmt: dict[str, Any] = {"Sid": sid + "Bucket", "Effect": "Allow",
                                "Action": _one(bucket_actions), "Resource": bucket_arn}
        if key and key != "*":
            stmt["Condition"] = {"StringLike": {"s3:prefix": [key]}}
        out.append(stmt)
    return out


def _one(actions: list[str]) -> str | list[str]:
    return actions[0] if len(actions) == 1 else actions


def _sid(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", name[0].upper() + name[1:])


def document(ref: TemplateRef) -> dict[str, Any]:
    """The policy document (Version + Statement) one template entry contributes."""
    return {"Version": POLICY_VERSION, "Statement": statements(ref)}


def describe() -> list[dict[str, Any]]:
    return [{"name": t.name, "actions": list(t.actions), "description": t.description,
             "scope": SCOPE_FORMS[t.service], "seed_actions": list(t.seed_actions),
             "note": t.note} for t in TEMPLATES.values()]
