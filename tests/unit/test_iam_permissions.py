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
    assert stmt["Condition"] == {
        "StringEqualsIfExists": {"iam:PassedToService": "ec2.amazonaws.com"}}
    writes = next(s for s in statements(doc) if "iam:CreateRole" in s["Action"])
    assert writes["Resource"] == "arn:aws:iam::*:role/spawn/*"
    # Outside spawn's own resources: reads, conditioned writes, and what RunInstances and
    # CreateSecurityGroup use without changing it.
    for s in statements(doc):
        if s["Effect"] == "Allow" and "*" in json.dumps(s["Resource"]) \
                and not json.dumps(s["Resource"]).count("spawn"):
            actions = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
            for a in actions:
                verb = a.split(":", 1)[1]
                assert verb.startswith(("Describe", "Get", "List", "Simulate")) or "Condition" in s \
                    or a in ("ec2:RunInstances", "ec2:CreateSecurityGroup"), (s["Sid"], a)


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


def _operations_the_agent_calls() -> set[str]:
    """Every EC2 operation spored's code calls: the ``_call("Operation", ...)`` sites of its one
    EC2 adapter (read from the source, not from a list someone keeps)."""
    import ast
    from pathlib import Path

    import spored
    import spored.ec2

    package = Path(spored.__file__).parent
    for path in package.glob("*.py"):  # no other agent module imports boto3 or builds a client
        if path.name != "ec2.py":
            text = path.read_text(encoding="utf-8")
            assert "import boto3" not in text and ".client(" not in text, path
    tree = ast.parse(Path(spored.ec2.__file__).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "_call" and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)
    return found


def test_agent_grants_are_exactly_what_the_agent_calls() -> None:
    """Both ways: nothing granted that the agent never calls, nothing called that isn't granted."""
    from controller.iam.document import iter_actions
    from spored.ec2 import PERMISSIONS

    called = _operations_the_agent_calls()
    assert called == set(PERMISSIONS), "spored.ec2.PERMISSIONS must list exactly the calls"
    needed = set(PERMISSIONS.values())
    declared = {(d.operation, a) for d in permissions.declarations("agent") for a in d.actions}
    assert declared == set(PERMISSIONS.items())
    granted = set(iter_actions(agent_policy_document()))
    assert granted == needed, f"granted but never called: {sorted(granted - needed)}; " \
                              f"called but not granted: {sorted(needed - granted)}"
    assert "ec2:DescribeInstances" not in granted
