"""The CLI policies against moto with IAM enforcement on, and the declared-permissions check.

moto enforces actions only (not conditions, resources or boundaries; see the shared notes), so
this proves "the printed policy grants every action spawn's IAM paths call", not the scoping.
"""

from __future__ import annotations

import json

import pytest

from controller import permissions
from controller.cli import main
from controller.iam import plan, provision, rollback
from controller.iam.cli_policy import SEED_MINIMAL, policy
from controller.iam.compose import IamRequest
from controller.iam.templates import parse_list
from spored.errors import ExitStatus, PermissionDenied
from tests.aws.iam_users import become, iam_user
from tests.conftest import MotoServer


def _iam_paths() -> None:
    """Every IAM code path the CLI user runs: default and template launches' provisioning,
    named-role create + rollback, `spawn iam roles`, `spawn iam cleanup --yes`."""
    provision(plan(IamRequest()))
    provision(plan(IamRequest(templates=parse_list("s3:ReadOnly@my-bucket/in/*,logs:WriteOnly"),
                              managed_policy_arns=("arn:aws:iam::aws:policy/ReadOnlyAccess",))))
    named = provision(plan(IamRequest(role_name="one-off", templates=parse_list("sqs:ReadOnly"))))
    rollback(named)
    assert main(["iam", "roles", "--region", "us-east-1", "--json"]) == ExitStatus.OK
    assert main(["iam", "cleanup", "--region", "us-east-1", "--yes", "--json"]) == ExitStatus.OK


def test_minimal_policy_is_sufficient_with_enforcement_on(
        aws: MotoServer, monkeypatch: pytest.MonkeyPatch, recorded: list[tuple[str, str]],
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["iam", "cli-policy", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    keys = iam_user(printed, "spawner")
    recorded.clear()
    become(monkeypatch, keys, enforcing=aws)
    _iam_paths()
    out = capsys.readouterr().out.strip().splitlines()
    cleanup = json.loads(out[-1])
    assert cleanup["dry_run"] is False
    assert len(cleanup["delete_roles"]) == 2  # both content-addressed roles, no instance uses them
    # Every operation made is declared, and the printed policy grants its actions.
    assert permissions.check_calls(recorded, printed) == []
    assert {op for _, op in recorded} >= {"CreateRole", "PutRolePolicy", "AttachRolePolicy",
                                          "CreateInstanceProfile", "AddRoleToInstanceProfile",
                                          "DeleteRole", "ListRoles", "DescribeInstances"}


def test_full_policy_is_sufficient_too(aws: MotoServer, monkeypatch: pytest.MonkeyPatch,
                                      recorded: list[tuple[str, str]]) -> None:
    keys = iam_user(policy("full"), "spawner-full")
    recorded.clear()
    become(monkeypatch, keys, enforcing=aws)
    _iam_paths()
    assert permissions.check_calls(recorded, policy("full")) == []


def test_scoped_policy_grants_every_action_the_iam_paths_call(
        aws: MotoServer, recorded: list[tuple[str, str]]) -> None:
    # moto matches a statement's Resource against "*" only, so a statement scoped to
    # role/spawn/* never applies there: the scoped policy is checked action by action instead.
    _iam_paths()
    assert recorded
    assert permissions.check_calls(recorded, policy("scoped")) == []


def test_the_seeds_minimal_policy_alone_is_not_enough(
        aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = iam_user(SEED_MINIMAL, "seed-user")
    become(monkeypatch, keys, enforcing=aws)
    with pytest.raises(PermissionDenied) as err:
        provision(plan(IamRequest()))
    assert "GetRole" in err.value.message  # the first call spawn needs that the seed lacks


def test_checker_flags_an_action_the_policy_lacks(aws: MotoServer,
                                                  recorded: list[tuple[str, str]]) -> None:
    provision(plan(IamRequest()))
    without_tag_role = json.loads(json.dumps(policy("minimal")))
    for stmt in without_tag_role["Statement"]:
        stmt["Action"] = [a for a in stmt["Action"] if a != "iam:TagRole"]
    assert permissions.check_calls(recorded, without_tag_role) == [
        "iam.CreateRole needs iam:TagRole, which the cli policy does not grant"]
