"""Declared permissions and the CLI policies spawn prints."""

from __future__ import annotations

import json

import pytest

from controller import permissions
from controller.cli import main
from controller.iam import agent_policy_document
from controller.iam.cli_policy import SEED_FULL, SEED_MINIMAL, policy
from controller.iam.document import allows, statements


def test_check_calls_reports_undeclared_and_missing() -> None:
    tight = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iam:GetRole", "Resource": "*"}]}
    problems = permissions.check_calls(
        [("iam", "GetRole"), ("iam", "CreateRole"), ("iam", "FrobnicateRole")], tight)
    text = "\n".join(problems)
    assert "iam.FrobnicateRole is called but not declared" in text
    assert "iam.CreateRole needs iam:CreateRole" in text
    assert "iam.CreateRole needs iam:TagRole" in text
    assert "GetRole" not in text.replace("FrobnicateRole", "")


def test_declaring_is_a_one_liner_and_idempotent() -> None:
    before = len(permissions.REGISTRY)
    permissions.declare("test", "ec2", "DescribeRegions", "ec2:DescribeRegions")
    permissions.declare("test", "ec2", "DescribeRegions", "ec2:DescribeRegions")
    try:
        assert len(permissions.REGISTRY) == before + 1
        assert permissions.actions_for("ec2", "DescribeRegions") == ("ec2:DescribeRegions",)
    finally:
        permissions.REGISTRY.pop()


@pytest.mark.parametrize("kind", ["minimal", "full", "scoped"])
def test_every_cli_policy_grants_every_declared_cli_action(kind: str) -> None:
    doc = policy(kind)
    missing = [a for a in permissions.required_actions("cli") if not allows([doc], a)]
    assert missing == []


def test_minimal_is_the_seed_plus_a_named_additions_statement() -> None:
    doc = policy("minimal")
    assert doc["Statement"][0] == SEED_MINIMAL["Statement"][0]
    additions = doc["Statement"][1]
    assert additions["Sid"] == "SpawnAdditions"
    for needed in ("iam:GetRole", "iam:PutRolePolicy", "iam:TagRole", "iam:GetInstanceProfile",
                   "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"):
        assert needed in additions["Action"]
    assert not set(additions["Action"]) & set(SEED_MINIMAL["Statement"][0]["Action"])


def test_full_starts_with_the_seeds_full_policy() -> None:
    doc = policy("full")
    assert doc["Statement"][: len(SEED_FULL["Statement"])] == SEED_FULL["Statement"]


def test_scoped_passrole_only_spawn_roles_to_ec2() -> None:
    doc = policy("scoped")
    passing = [s for s in statements(doc) if "iam:PassRole" in json.dumps(s["Action"])]
    assert len(passing) == 1
    stmt = passing[0]
    assert stmt["Resource"] == "arn:aws:iam::*:role/spawn/*"
    assert stmt["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    writes = next(s for s in statements(doc) if "iam:CreateRole" in s["Action"])
    assert writes["Resource"] == ["arn:aws:iam::*:role/spawn/*",
                                  "arn:aws:iam::*:instance-profile/spawn/*"]
    assert all("iam:" not in a or a.startswith(("iam:Get", "iam:List"))
               for s in statements(doc) if s["Resource"] == "*" for a in s["Action"])


def test_agent_policy_grants_every_declared_agent_action() -> None:
    problems = permissions.check_calls(
        [(d.service, d.operation) for d in permissions.declarations("agent")],
        agent_policy_document(), principal="agent")
    assert problems == []


@pytest.mark.parametrize(("flag", "kind"), [([], "minimal"), (["--full"], "full"),
                                            (["--scoped"], "scoped")])
def test_cli_prints_the_policy(flag: list[str], kind: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["iam", "cli-policy", *flag, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == policy(kind)


def test_the_agents_own_declarations_are_granted_and_registered() -> None:
    from spored.ec2 import PERMISSIONS

    for operation, action in PERMISSIONS.items():
        assert allows([agent_policy_document()], action), action
        assert action in (permissions.actions_for("ec2", operation, "agent") or ())
