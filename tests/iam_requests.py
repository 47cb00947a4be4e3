"""Request contexts for ``tests.iam_evaluator``, built only from keys AWS documents.

A context is only as good as its keys: a key AWS never sends (``aws:ARN`` on an EC2 action, say)
would make a policy look right in a test and fail on AWS. So every context built here is checked
against one table: for each action and resource type, the condition keys the Service
Authorization Reference lists, plus the documented global keys, each with its reference.
``request()`` refuses any other key (``UndocumentedKey``).

Sources:

* `EC2 actions and resource types`_ (Service Authorization Reference, "Actions defined by Amazon
  EC2" and the ``instance`` resource type).
* `Global condition keys`_ (IAM User Guide).
* ``ec2:SourceInstanceARN``: `Policy variables`_ ("Request information that you can use for policy
  variables": present only when the request comes from an EC2 instance using the role of its
  instance profile); AWS confirmed it is a global key in
  https://github.com/awsdocs/iam-user-guide/issues/160.

.. _EC2 actions and resource types:
   https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html
.. _Global condition keys:
   https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html
.. _Policy variables:
   https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_variables.html
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tests.iam_evaluator import ContextValue

EC2_SAR = "https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html"
EC2_INSTANCE_KEYS_REF = f"{EC2_SAR}#amazonec2-instance"
EC2_ACTIONS_REF = f"{EC2_SAR}#amazonec2-actions-as-permissions"
GLOBAL_KEYS_REF = "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html"
SOURCE_INSTANCE_REF = ("https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_variables.html"
                       " ; global: https://github.com/awsdocs/iam-user-guide/issues/160")

TAG_KEY = "${TagKey}"


@dataclass(frozen=True)
class DocumentedKey:
    """A condition key AWS documents; a name ending in ``${TagKey}`` stands for a key family."""

    name: str
    reference: str

    def covers(self, key: str) -> bool:
        if self.name.endswith(TAG_KEY):
            prefix = self.name[: -len(TAG_KEY)].casefold()
            return key.casefold().startswith(prefix) and len(key) > len(prefix)
        return key.casefold() == self.name.casefold()


# The instance resource type's keys that these tests use (a subset of the reference's list).
INSTANCE_KEYS = tuple(DocumentedKey(k, EC2_INSTANCE_KEYS_REF) for k in (
    "aws:ResourceTag/${TagKey}", "ec2:ResourceTag/${TagKey}", "ec2:InstanceID", "ec2:Region",
    "ec2:AvailabilityZone", "ec2:InstanceProfile", "ec2:InstanceType"))
TAGGING_KEYS = tuple(DocumentedKey(k, EC2_ACTIONS_REF) for k in (
    "aws:RequestTag/${TagKey}", "aws:TagKeys"))

# (action, resource type) -> documented keys. Resource type None: the action has none (Resource "*").
ACTION_KEYS: dict[tuple[str, str | None], tuple[DocumentedKey, ...]] = {
    ("ec2:TerminateInstances", "instance"): INSTANCE_KEYS,
    ("ec2:StopInstances", "instance"): INSTANCE_KEYS,
    ("ec2:StartInstances", "instance"): INSTANCE_KEYS,
    ("ec2:CreateTags", "instance"): INSTANCE_KEYS + TAGGING_KEYS + (
        DocumentedKey("ec2:CreateAction", EC2_ACTIONS_REF),),
    ("ec2:DeleteTags", "instance"): INSTANCE_KEYS + TAGGING_KEYS,
    ("ec2:DescribeTags", None): (DocumentedKey("ec2:Region", EC2_ACTIONS_REF),),
    ("ec2:DescribeInstances", None): (DocumentedKey("ec2:Region", EC2_ACTIONS_REF),),
}

GLOBAL_KEYS = (
    DocumentedKey("aws:PrincipalArn", GLOBAL_KEYS_REF),
    DocumentedKey("aws:PrincipalAccount", GLOBAL_KEYS_REF),
    DocumentedKey("aws:RequestedRegion", GLOBAL_KEYS_REF),
    DocumentedKey("ec2:SourceInstanceARN", SOURCE_INSTANCE_REF),
)


class UndocumentedKey(ValueError):
    """A context key AWS does not document for the action: AWS would never send it."""


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: dict[str, ContextValue]


def documented_keys(action: str, resource_type: str | None) -> tuple[DocumentedKey, ...]:
    try:
        return ACTION_KEYS[(action, resource_type)] + GLOBAL_KEYS
    except KeyError:
        raise UndocumentedKey(f"no key table for {action} on {resource_type}: add it with its "
                              "reference") from None


def request(action: str, resource_type: str | None, resource: str,
            context: Mapping[str, ContextValue]) -> Request:
    """A request whose every context key is documented for ``action`` on ``resource_type``."""
    table = documented_keys(action, resource_type)
    for key in context:
        if not any(d.covers(key) for d in table):
            raise UndocumentedKey(f"{key} is not a documented condition key for {action} on "
                                  f"{resource_type or 'no resource'} (nor a documented global key)")
    return Request(action, resource, dict(context))


# ---- EC2 instance requests, the shapes the agent's calls take ----

@dataclass(frozen=True)
class Instance:
    instance_id: str
    tags: Mapping[str, str] = field(default_factory=dict)
    region: str = "us-east-1"
    account: str = "123456789012"
    partition: str = "aws"

    @property
    def arn(self) -> str:
        return (f"arn:{self.partition}:ec2:{self.region}:{self.account}:instance/"
                f"{self.instance_id}")


@dataclass(frozen=True)
class Caller:
    """Who signs: a role's credentials, on an instance (IMDS credentials) or anywhere else."""

    role_arn: str = "arn:aws:iam::123456789012:role/spawn/spawn-abc"
    on_instance: Instance | None = None


def instance_request(action: str, target: Instance, caller: Caller, *,
                     request_tags: Mapping[str, str] | None = None,
                     create_action: str | None = None) -> Request:
    """An EC2 action on one instance, with the keys AWS documents for it.

    ``ec2:SourceInstanceARN`` is present only when the caller's credentials come from an
    instance's profile; ``aws:RequestTag``/``aws:TagKeys`` only when the request carries tags;
    ``ec2:CreateAction`` only for tagging at creation time (not a standalone CreateTags).
    """
    ctx: dict[str, ContextValue] = {
        "ec2:InstanceID": target.instance_id,
        "ec2:Region": target.region,
        "aws:RequestedRegion": target.region,
        "aws:PrincipalArn": caller.role_arn,
        "aws:PrincipalAccount": target.account,
    }
    for key, value in target.tags.items():
        ctx[f"ec2:ResourceTag/{key}"] = value
        ctx[f"aws:ResourceTag/{key}"] = value
    if caller.on_instance is not None:
        ctx["ec2:SourceInstanceARN"] = caller.on_instance.arn
    if request_tags is not None:
        ctx["aws:TagKeys"] = list(request_tags)
        for key, value in request_tags.items():
            ctx[f"aws:RequestTag/{key}"] = value
    if create_action is not None:
        ctx["ec2:CreateAction"] = create_action
    return request(action, "instance", target.arn, ctx)


def region_request(action: str, caller: Caller, *, region: str = "us-east-1") -> Request:
    """An EC2 action without resource types (Describe*): Resource ``*``, ``ec2:Region`` only."""
    ctx: dict[str, ContextValue] = {"ec2:Region": region, "aws:RequestedRegion": region,
                                    "aws:PrincipalArn": caller.role_arn}
    if caller.on_instance is not None:
        ctx["ec2:SourceInstanceARN"] = caller.on_instance.arn
    return request(action, None, "*", ctx)
