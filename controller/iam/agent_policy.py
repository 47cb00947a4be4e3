"""The agent's (spored's) own permissions: included in every instance role spawn creates or updates.

Exactly the actions the agent calls (``spored.ec2.PERMISSIONS``; a test holds the two equal both
ways), each in the form AWS evaluates:

* ``SporedDescribeTags``: ``ec2:DescribeTags`` on ``*`` with no condition. The Service
  Authorization Reference for Amazon EC2 (`EC2 actions`_) lists no resource type for it and only
  ``ec2:Region`` as a condition key, so a resource-tag condition would never allow it (the seed's
  bug). ``ec2:DescribeInstances`` is not granted: the agent never calls it.
* ``SporedEndSelf``: ``ec2:TerminateInstances`` and ``ec2:StopInstances`` (stop and hibernate are
  both StopInstances) on ``instance/*``, only when the target is tagged ``spawn:managed=true``
  **and** is the instance whose role credentials sign the request.
* ``SporedTagSelf``: ``ec2:CreateTags`` on the same terms, and only for the agent's own keys
  (``spored.contract.AGENT_WRITABLE_TAGS``): ``ForAllValues:StringEquals`` on ``aws:TagKeys``,
  plus ``Null: false`` on ``aws:TagKeys`` because ``ForAllValues`` is also true when the key is
  absent (IAM User Guide, `Multivalued context keys`_: "You can include a Null condition operator
  with a false value in your policy to check if the context key in the request exists and its
  value is not null").

"This instance only" is the shape of AWS's own managed policy `AWSEC2VssSnapshotPolicy`_ (v2,
attached to instance roles; see also the EC2 guide's `VSS policy page`_)::

    "ArnLike": {"ec2:SourceInstanceARN": "arn:aws:ec2:*:*:instance/${ec2:InstanceId}"}

* ``ec2:SourceInstanceARN`` is the ARN of the instance from which the request originated. It is
  present only when the request is signed with the credentials of an instance's profile role
  (IAM User Guide, `Policy variables`_, request information table), and AWS confirmed it is a
  global condition key (https://github.com/awsdocs/iam-user-guide/issues/160). Credentials
  used anywhere else carry no such key, and ``ArnLike`` on an absent key is false.
* ``${ec2:InstanceId}`` is a policy variable resolved from ``ec2:InstanceID``, a documented key of
  the ``instance`` resource type that these actions act on (`EC2 actions`_, resource types
  table). Condition key names, and so variable names, are case-insensitive.
* The two match only when an instance acts on itself.

Not used, on evidence: ``"StringEquals": {"aws:ARN": "${ec2:SourceInstanceARN}"}``. ``aws:ARN`` is
not a documented condition key for any EC2 action (parliament: UNKNOWN_CONDITION_FOR_ACTION;
IAM Access Analyzer calls it unsupported), and a key absent from the request context makes
``StringEquals`` false, so that statement would never allow anything.

The live proof is the agent's own ``DryRun=True`` calls at start; ``tests/unit/test_iam_agent_matrix.py``
evaluates this policy and every composed role with a condition-aware evaluator (docs/iam.md).

.. _EC2 actions:
   https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html
.. _AWSEC2VssSnapshotPolicy:
   https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSEC2VssSnapshotPolicy.html
.. _VSS policy page: https://docs.aws.amazon.com/AWSEC2/latest/WindowsGuide/vss-iam-reqs.html
.. _Policy variables:
   https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_variables.html
.. _Multivalued context keys: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition_examples-multi-valued-context-keys.html
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spored.contract import AGENT_WRITABLE_TAGS, MANAGED_VALUE, TAG_MANAGED

from .templates import POLICY_VERSION

INSTANCE_ARN = "arn:{partition}:ec2:*:*:instance/*"
SELF_CONDITION_KEY = "ec2:SourceInstanceARN"
SELF_INSTANCE_PATTERN = "arn:{partition}:ec2:*:*:instance/${{ec2:InstanceId}}"

DESCRIBE_ACTIONS = ("ec2:DescribeTags",)
END_ACTIONS = ("ec2:StopInstances", "ec2:TerminateInstances")
TAG_ACTIONS = ("ec2:CreateTags",)
AGENT_ACTIONS = DESCRIBE_ACTIONS + END_ACTIONS + TAG_ACTIONS


def self_condition(*, partition: str = "aws") -> dict[str, dict[str, str]]:
    """The target is managed and is the instance whose role credentials sign the request."""
    return {
        "StringEquals": {f"ec2:ResourceTag/{TAG_MANAGED}": MANAGED_VALUE},
        "ArnLike": {SELF_CONDITION_KEY: SELF_INSTANCE_PATTERN.format(partition=partition)},
    }


def agent_policy_document(*, partition: str = "aws",
                          writable_tags: Sequence[str] = AGENT_WRITABLE_TAGS) -> dict[str, Any]:
    """The agent's policy document. ``spawn iam agent-policy --json`` prints exactly this."""
    instance = INSTANCE_ARN.format(partition=partition)
    tag_condition: dict[str, dict[str, Any]] = {
        **self_condition(partition=partition),
        "ForAllValues:StringEquals": {"aws:TagKeys": list(writable_tags)},
        "Null": {"aws:TagKeys": "false"},
    }
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {"Sid": "SporedDescribeTags", "Effect": "Allow", "Action": list(DESCRIBE_ACTIONS),
             "Resource": "*"},
            {"Sid": "SporedEndSelf", "Effect": "Allow", "Action": list(END_ACTIONS),
             "Resource": instance, "Condition": self_condition(partition=partition)},
            {"Sid": "SporedTagSelf", "Effect": "Allow", "Action": list(TAG_ACTIONS),
             "Resource": instance, "Condition": tag_condition},
        ],
    }
