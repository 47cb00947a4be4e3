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


def test_describe_calls_are_unconditioned_on_star() -> None:
    stmts = _by_action(agent_policy_document())
    for action in ("ec2:DescribeTags", "ec2:DescribeInstances"):
        assert stmts[action]["Resource"] == "*"
        assert "Condition" not in stmts[action]


@pytest.mark.parametrize("action", ["ec2:TerminateInstances", "ec2:StopInstances"])
def test_ending_needs_managed_tag_and_self(action: str) -> None:
    stmt = _by_action(agent_policy_document())[action]
    assert stmt["Resource"] == "arn:aws:ec2:*:*:instance/*"
    assert stmt["Condition"] == {"StringEquals": {
        "ec2:ResourceTag/spawn:managed": "true", "aws:ARN": "${ec2:SourceInstanceARN}"}}


def test_create_tags_only_self_managed_and_own_keys() -> None:
    stmt = _by_action(agent_policy_document())["ec2:CreateTags"]
    cond = stmt["Condition"]
    assert isinstance(cond, dict)
    assert cond["StringEquals"]["aws:ARN"] == "${ec2:SourceInstanceARN}"
    assert cond["StringEquals"]["ec2:ResourceTag/spawn:managed"] == "true"
    assert cond["ForAllValues:StringEquals"] == {"aws:TagKeys": list(AGENT_WRITABLE_TAGS)}


def test_agent_policy_has_no_lint_errors() -> None:
    report = lint_document(agent_policy_document(), source="agent-policy")
    assert report.errors == [], [f.text("agent") for f in report.errors]
    # The only findings are the documented aws:ARN self-scoping ones.
    assert {f.issue for f in report.warnings} <= {"UNKNOWN_CONDITION_FOR_ACTION"}


def test_cli_prints_the_agent_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["iam", "agent-policy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == agent_policy_document()
