"""The agent's (spored's) own permissions: included in every instance role spawn creates or updates.

This keeps the intent of the seed's "Default spored Role" and fixes its bug. The seed put the
``ec2:ResourceTag/spawn:managed`` condition on ``ec2:DescribeTags`` and ``ec2:DescribeInstances``;
AWS's Service Authorization Reference for Amazon EC2 ("Actions defined by Amazon EC2",
https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html) lists no
resource type for those two actions and only the ``ec2:Region`` condition key, so a statement
conditioned on a resource tag never allows them. Here:

* ``Describe``: ``ec2:DescribeTags`` and ``ec2:DescribeInstances``, Resource ``*``, no condition
  (reference: no resource types; condition keys: ``ec2:Region`` only).
* ``EndSelf``: ``ec2:TerminateInstances`` and ``ec2:StopInstances`` (stop and hibernate are both
  StopInstances). Reference: resource type ``instance*`` with condition keys including
  ``aws:ResourceTag/${TagKey}``, ``ec2:ResourceTag/${TagKey}`` and ``ec2:InstanceID``. Conditioned on
  ``ec2:ResourceTag/spawn:managed = true`` **and** on the target being the calling instance.
* ``TagSelf``: ``ec2:CreateTags`` on the calling instance only, only when it is managed, and only for
  the agent's own keys (``spored.contract.AGENT_WRITABLE_TAGS``). Reference: resource type
  ``instance`` with ``aws:RequestTag/${TagKey}``, ``aws:TagKeys``, ``ec2:ResourceTag/${TagKey}``;
  ``ForAllValues:StringEquals`` on ``aws:TagKeys`` limits every key in the request.

"The calling instance itself": ``ec2:SourceInstanceARN`` is the documented policy variable holding
the ARN of the instance whose role credentials signed the request (IAM User Guide, "IAM policy
elements: Variables and tags", request information usable as policy variables; the EC2 condition
key table lists it as "the ARN of the instance from which the request originated"). The target is
compared with it through ``aws:ARN``, the resource-ARN key peers use for exactly this
(``"StringEquals": {"aws:ARN": "${ec2:SourceInstanceARN}"}``: terraform-aws-github-runner,
cdk-github-runners). Caveat, stated plainly: ``aws:ARN`` is *not* in the Service Authorization
Reference; the console and parliament flag it (UNKNOWN_CONDITION_FOR_ACTION), although AWS
evaluates it. The documented alternatives fail: a Resource of ``${ec2:SourceInstanceARN}`` is not
an ARN at validation time, and ``ec2:SourceInstanceARN`` as a *condition* names the caller, not the
target. If AWS ever stopped resolving ``aws:ARN`` the statement would deny (fail closed), and the
instance still ends through its OS-level backstop (shutdown behaviour ``terminate``). Outside an
instance (no ``ec2:SourceInstanceARN`` in the request) the statement never matches either.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from spored.contract import AGENT_WRITABLE_TAGS, MANAGED_VALUE, TAG_MANAGED

from .templates import POLICY_VERSION

INSTANCE_ARN = "arn:{partition}:ec2:*:*:instance/*"
SELF_CONDITION_KEY = "aws:ARN"
SELF_CONDITION_VALUE = "${ec2:SourceInstanceARN}"

DESCRIBE_ACTIONS = ("ec2:DescribeInstances", "ec2:DescribeTags")
END_ACTIONS = ("ec2:StopInstances", "ec2:TerminateInstances")
TAG_ACTIONS = ("ec2:CreateTags",)
AGENT_ACTIONS = DESCRIBE_ACTIONS + END_ACTIONS + TAG_ACTIONS


def agent_policy_document(*, partition: str = "aws",
                          writable_tags: Sequence[str] = AGENT_WRITABLE_TAGS) -> dict[str, Any]:
    """The agent's policy document. ``spawn iam agent-policy --json`` prints exactly this."""
    instance = INSTANCE_ARN.format(partition=partition)
    managed_and_self: dict[str, dict[str, Any]] = {
        "StringEquals": {
            f"ec2:ResourceTag/{TAG_MANAGED}": MANAGED_VALUE,
            SELF_CONDITION_KEY: SELF_CONDITION_VALUE,
        },
    }
    tag_condition = copy.deepcopy(managed_and_self)
    tag_condition["ForAllValues:StringEquals"] = {"aws:TagKeys": list(writable_tags)}
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {"Sid": "SporedDescribe", "Effect": "Allow", "Action": list(DESCRIBE_ACTIONS),
             "Resource": "*"},
            {"Sid": "SporedEndSelf", "Effect": "Allow", "Action": list(END_ACTIONS),
             "Resource": instance, "Condition": managed_and_self},
            {"Sid": "SporedTagSelf", "Effect": "Allow", "Action": list(TAG_ACTIONS),
             "Resource": instance, "Condition": tag_condition},
        ],
    }


def agent_statements(*, partition: str = "aws") -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = agent_policy_document(partition=partition)["Statement"]
    return statements
