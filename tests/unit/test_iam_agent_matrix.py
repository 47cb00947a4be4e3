"""The agent's permission matrix, evaluated with conditions (tests/iam_evaluator.py).

moto ignores IAM conditions, so only an evaluator fed the keys AWS documents
(tests/iam_requests.py) can say whether the self-scoping holds. The same matrix runs against the
agent policy alone and against every role ``spawn launch`` composes (each template, a custom
policy file, AWS managed policies), to show composition never widens what the role can do to an
instance: end it, stop it, tag it.

The policy this replaced (``"StringEquals": {"aws:ARN": "${ec2:SourceInstanceARN}"}``) is kept
here as ``OLD_AGENT_POLICY``: the matrix fails against it (``test_the_old_policy_fails_the_matrix``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from controller.iam import IamRequest, agent_policy_document, plan
from controller.iam.templates import TEMPLATES, parse_list
from spored.contract import AGENT_WRITABLE_TAGS
from tests.iam_evaluator import evaluate
from tests.iam_requests import Caller, Instance, Request, instance_request, region_request

ME = Instance("i-0aaaaaaaaaaaaaaaa", {"spawn:managed": "true", "Name": "me"})
OTHER = Instance("i-0bbbbbbbbbbbbbbbb", {"spawn:managed": "true"})
ON_ME = Caller(on_instance=ME)
OFF_INSTANCE = Caller()  # the role's credentials copied off the instance: no ec2:SourceInstanceARN
OWN_KEY = AGENT_WRITABLE_TAGS[0]


def _me_tagged(value: str | None) -> Instance:
    tags = {"Name": "me"} if value is None else {"Name": "me", "spawn:managed": value}
    return Instance(ME.instance_id, tags)


@dataclass(frozen=True)
class Case:
    name: str
    request: Request
    allowed: bool


def _end(action: str) -> list[Case]:
    verb = action.removeprefix("ec2:")
    cases = [
        Case(f"{verb} itself", instance_request(action, ME, ON_ME), True),
        Case(f"{verb} another managed instance", instance_request(action, OTHER, ON_ME), False),
        Case(f"{verb} from off the instance", instance_request(action, ME, OFF_INSTANCE), False),
        Case(f"{verb} another instance from off the instance",
             instance_request(action, OTHER, OFF_INSTANCE), False),
    ]
    for value in (None, "TRUE", "true ", "false"):
        target = _me_tagged(value)
        cases.append(Case(f"{verb} itself with spawn:managed={value!r}",
                          instance_request(action, target, Caller(on_instance=target)), False))
    return cases


def _tags() -> list[Case]:
    def tag(target: Instance, caller: Caller, tags: dict[str, str],
            action: str = "ec2:CreateTags") -> Request:
        return instance_request(action, target, caller, request_tags=tags)

    cases = [
        Case("CreateTags own key on itself", tag(ME, ON_ME, {OWN_KEY: "ok"}), True),
        Case("CreateTags own key on another instance", tag(OTHER, ON_ME, {OWN_KEY: "x"}), False),
        Case("CreateTags own key from off the instance", tag(ME, OFF_INSTANCE, {OWN_KEY: "x"}),
             False),
        Case("CreateTags own + foreign key on itself",
             tag(ME, ON_ME, {OWN_KEY: "ok", "spawn:ttl": "99d"}), False),
        Case("DeleteTags own key on itself", tag(ME, ON_ME, {OWN_KEY: ""}, "ec2:DeleteTags"),
             False),
        Case("DeleteTags spawn:managed on itself",
             tag(ME, ON_ME, {"spawn:managed": ""}, "ec2:DeleteTags"), False),
        Case("DescribeTags", region_request("ec2:DescribeTags", ON_ME), True),
    ]
    for key in ("spawn:managed", "spawn:ttl", "spawn:on-complete", "Name", "owner"):
        cases.append(Case(f"CreateTags foreign key {key} on itself",
                          tag(ME, ON_ME, {key: "x"}), False))
    unmanaged = _me_tagged(None)
    cases.append(Case("CreateTags own key on itself when not managed",
                      tag(unmanaged, Caller(on_instance=unmanaged), {OWN_KEY: "x"}), False))
    return cases


MATRIX = _end("ec2:TerminateInstances") + _end("ec2:StopInstances") + _tags()


def wrong(policies: list[dict[str, Any]], boundary: list[dict[str, Any]] | None = None) -> list[str]:
    """The matrix cases these policies decide differently from the expectation."""
    out = []
    for case in MATRIX:
        r = case.request
        decision = evaluate(policies, r.action, r.resource, r.context, boundary)
        if decision.allowed != case.allowed:
            out.append(f"{case.name}: expected {'allow' if case.allowed else 'deny'}, "
                       f"got {decision}")
    return out


OLD_AGENT_POLICY: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {"Sid": "SporedDescribe", "Effect": "Allow",
         "Action": ["ec2:DescribeInstances", "ec2:DescribeTags"], "Resource": "*"},
        {"Sid": "SporedEndSelf", "Effect": "Allow",
         "Action": ["ec2:StopInstances", "ec2:TerminateInstances"],
         "Resource": "arn:aws:ec2:*:*:instance/*",
         "Condition": {"StringEquals": {"ec2:ResourceTag/spawn:managed": "true",
                                        "aws:ARN": "${ec2:SourceInstanceARN}"}}},
        {"Sid": "SporedTagSelf", "Effect": "Allow", "Action": ["ec2:CreateTags"],
         "Resource": "arn:aws:ec2:*:*:instance/*",
         "Condition": {"StringEquals": {"ec2:ResourceTag/spawn:managed": "true",
                                        "aws:ARN": "${ec2:SourceInstanceARN}"},
                       "ForAllValues:StringEquals": {"aws:TagKeys": ["spawn:agent-status"]}}},
    ],
}


def test_the_matrix_holds_for_the_agent_policy() -> None:
    assert wrong([agent_policy_document()]) == []


@pytest.mark.parametrize("partition", ["aws-cn", "aws-us-gov"])
def test_the_matrix_holds_in_other_partitions(partition: str) -> None:
    def moved(i: Instance) -> Instance:
        return Instance(i.instance_id, i.tags, partition=partition)

    me, other = moved(ME), moved(OTHER)
    doc = agent_policy_document(partition=partition)
    for action in ("ec2:TerminateInstances", "ec2:StopInstances"):
        assert evaluate([doc], action, me.arn,
                        instance_request(action, me, Caller(on_instance=me)).context).allowed
        assert not evaluate([doc], action, other.arn,
                            instance_request(action, other, Caller(on_instance=me)).context).allowed


def test_the_old_policy_fails_the_matrix() -> None:
    """aws:ARN is not in any documented request context for these actions, so the old policy's
    StringEquals on it is false: even the instance ending itself was denied."""
    failures = wrong([OLD_AGENT_POLICY])
    assert failures == [
        "TerminateInstances itself: expected allow, got implicit deny: no statement allows it",
        "StopInstances itself: expected allow, got implicit deny: no statement allows it",
        "CreateTags own key on itself: expected allow, got implicit deny: no statement allows it",
    ]


def test_the_agent_policy_no_longer_grants_describe_instances() -> None:
    r = region_request("ec2:DescribeInstances", ON_ME)
    assert evaluate([OLD_AGENT_POLICY], r.action, r.resource, r.context).allowed
    assert not evaluate([agent_policy_document()], r.action, r.resource, r.context).allowed


# ---- every composed role ----

CUSTOM_POLICY_FILE: dict[str, Any] = {  # what a user's --iam-policy-file typically holds
    "Version": "2012-10-17",
    "Statement": [
        {"Sid": "Data", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": "arn:aws:s3:::my-results/*"},
        {"Sid": "Look", "Effect": "Allow", "Action": ["ec2:DescribeInstances", "ec2:DescribeVolumes"],
         "Resource": "*"},
    ],
}


def _aws_managed(name: str) -> dict[str, Any]:
    """An AWS managed policy's document, from the copy of AWS's managed policies moto ships."""
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    document: dict[str, Any] = json.loads(aws_managed_policies_data)[name]["Document"]
    return document


# AWS managed policies commonly attached to instance roles; AWSEC2VssSnapshotPolicy itself grants
# ec2:CreateTags (on snapshots and images) and self-scoped instance actions.
MANAGED = ("AmazonSSMManagedInstanceCore", "CloudWatchAgentServerPolicy", "AWSEC2VssSnapshotPolicy")

ROLES: dict[str, IamRequest] = {
    **{f"template {name}": IamRequest(templates=parse_list(name)) for name in TEMPLATES},
    **{f"template {name}@scoped": IamRequest(templates=parse_list(f"{name}@results"))
       for name in ("s3:FullAccess", "sqs:WriteOnly", "logs:WriteOnly")},
    "custom policy file": IamRequest(custom_document=CUSTOM_POLICY_FILE, policy_file="mine.json"),
    "every template and the file": IamRequest(
        templates=parse_list(",".join(TEMPLATES)), custom_document=CUSTOM_POLICY_FILE,
        policy_file="mine.json"),
}


def _documents(request: IamRequest, managed: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return [*plan(request).inline_policies.values(), *(_aws_managed(m) for m in managed)]


@pytest.mark.parametrize("role", sorted(ROLES))
def test_the_matrix_holds_for_every_composed_role(role: str) -> None:
    assert wrong(_documents(ROLES[role])) == []


@pytest.mark.parametrize("managed", MANAGED)
def test_the_matrix_holds_with_aws_managed_policies(managed: str) -> None:
    assert wrong(_documents(IamRequest(templates=parse_list("s3:ReadOnly")), (managed,))) == []


def test_the_matrix_notices_a_role_that_widens() -> None:
    """The check can fail: a custom file granting CreateTags on every resource widens tagging."""
    loose = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*"}]}
    failures = wrong(_documents(IamRequest(custom_document=loose, policy_file="loose.json")))
    assert failures and all(f.startswith("CreateTags") for f in failures)
    assert any("foreign key spawn:managed" in f for f in failures)


def test_a_permissions_boundary_without_the_agent_actions_stops_the_agent() -> None:
    """Effective permissions are identity allow AND boundary allow: a boundary must leave room."""
    boundary = [{"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:*", "ec2:Describe*"], "Resource": "*"}]}]
    failures = wrong([agent_policy_document()], boundary)
    assert "TerminateInstances itself: expected allow, got implicit deny: allowed by " \
           "SporedEndSelf but not by the boundary" in failures
    roomy = [{"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"}]}]
    assert wrong([agent_policy_document()], roomy) == []
