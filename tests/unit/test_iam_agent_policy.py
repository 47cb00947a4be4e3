"""The agent's policy: the seed's intent without its bug, self-scoped, parliament-clean."""

from __future__ import annotations

import json

import pytest

from controller.cli import main
from controller.iam.agent_policy import agent_policy_document
from controller.iam.lint import lint_document
from spored.contract import AGENT_WRITABLE_TAGS

SEED_AGENT_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{
        "Effect": "Allow",
        "Action": ["ec2:DescribeTags", "ec2:DescribeInstances", "ec2:TerminateInstances"],
        "Resource": "*",
        "Condition": {"StringEquals": {"ec2:ResourceTag/spawn:managed": "true"}},
    }],
}


def _by_action(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for stmt in doc["Statement"]:  # type: ignore[attr-defined]
        actions = stmt["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            out[action] = stmt
    return out


def test_seed_agent_policy_is_flagged_by_lint() -> None:
    report = lint_document(SEED_AGENT_POLICY)
    flagged = {f.detail for f in report.errors if f.issue == "UNKNOWN_CONDITION_FOR_ACTION"}
    assert any("ec2:DescribeTags" in d for d in flagged)
    assert any("ec2:DescribeInstances" in d for d in flagged)


def test_describe_tags_is_unconditioned_on_star_and_describe_instances_is_gone() -> None:
    stmts = _by_action(agent_policy_document())
    assert stmts["ec2:DescribeTags"]["Resource"] == "*"
    assert "Condition" not in stmts["ec2:DescribeTags"]
    assert "ec2:DescribeInstances" not in stmts


SELF = {"StringEquals": {"ec2:ResourceTag/spawn:managed": "true"},
        "ArnLike": {"ec2:SourceInstanceARN": "arn:aws:ec2:*:*:instance/${ec2:InstanceId}"}}


@pytest.mark.parametrize("action", ["ec2:TerminateInstances", "ec2:StopInstances"])
def test_ending_needs_managed_tag_and_self(action: str) -> None:
    stmt = _by_action(agent_policy_document())[action]
    assert stmt["Resource"] == "arn:aws:ec2:*:*:instance/*"
    assert stmt["Condition"] == SELF


def test_create_tags_only_self_managed_and_own_keys() -> None:
    stmt = _by_action(agent_policy_document())["ec2:CreateTags"]
    assert stmt["Condition"] == {**SELF,
                                 "ForAllValues:StringEquals": {"aws:TagKeys": list(AGENT_WRITABLE_TAGS)},
                                 "Null": {"aws:TagKeys": "false"}}


def test_partition_reaches_resource_and_self_pattern() -> None:
    doc = agent_policy_document(partition="aws-us-gov")
    stmt = _by_action(doc)["ec2:StopInstances"]
    assert stmt["Resource"] == "arn:aws-us-gov:ec2:*:*:instance/*"
    assert stmt["Condition"] == {
        "StringEquals": {"ec2:ResourceTag/spawn:managed": "true"},
        "ArnLike": {"ec2:SourceInstanceARN": "arn:aws-us-gov:ec2:*:*:instance/${ec2:InstanceId}"}}


def test_agent_policy_lints_with_no_finding_at_all() -> None:
    report = lint_document(agent_policy_document(), source="agent-policy")
    assert report.findings == [], [f.text("agent") for f in report.findings]


def test_no_policy_spawn_generates_uses_aws_arn() -> None:
    """aws:ARN is no documented condition key for EC2 actions: none of our policies may use it."""
    from controller.iam.cli_policy import policy
    from controller.iam.compose import TRUST_POLICY, templates_document
    from controller.iam.templates import TEMPLATES, parse_list

    generated = [agent_policy_document(), TRUST_POLICY, *(policy(k) for k in
                                                          ("minimal", "full", "scoped"))]
    generated += [templates_document(parse_list(name)) for name in TEMPLATES]
    for doc in generated:
        assert "aws:arn" not in json.dumps(doc).lower()


def test_cli_prints_the_agent_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["iam", "agent-policy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == agent_policy_document()
