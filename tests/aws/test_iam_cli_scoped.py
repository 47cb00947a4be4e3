"""The scoped CLI policy and `spawn iam setup` against moto, with IAM enforcement on.

What moto can and cannot prove here (moto 5.2, ``moto/core/authorization.py`` and
``moto/iam/access_control.py``): it ignores every Condition, and it authorizes EC2, IAM, SSM and
STS calls against the resource ``"*"`` only, so a statement whose Resource is an ARN pattern never
applies to them; S3 calls are authorized against the real bucket/object ARN. The user here
therefore holds the scoped policy with its non-S3 Resources widened to ``"*"`` (``moto_view``),
statements, actions, S3 resources and Deny statements unchanged: this proves that the policy
names every action a launch and the lifecycle commands call, and that spawn's bucket names fit
its S3 scoping. The conditions and ARN scoping are proven by the evaluator matrix in
tests/unit/test_iam_cli_scoped.py; ``test_moto_cannot_see_resource_scoping`` fails the day moto
starts matching resources, so this widening can go.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from controller import aws as controller_aws
from controller import permissions
from controller.cli import main
from controller.iam.boundary import boundary_arn, boundary_document
from controller.iam.cli_policy import scoped_policy
from controller.iam.document import compact_size
from controller.iam.setup import MAX_POLICY_VERSIONS
from tests.aws.iam_users import become, iam_user
from tests.conftest import MotoServer

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account


# moto's S3 authorizes some operations under the operation's name instead of the IAM action AWS
# checks (moto/s3/responses.py ACTION_MAP): HeadBucket is authorized by s3:ListBucket and
# PutPublicAccessBlock by s3:PutBucketPublicAccessBlock (Service Authorization Reference for S3).
MOTO_S3_NAMES = {"s3:ListBucket": "s3:HeadBucket",
                 "s3:PutBucketPublicAccessBlock": "s3:PutPublicAccessBlock"}


def moto_view(policy: dict[str, Any]) -> dict[str, Any]:
    """The policy as moto can evaluate it: non-S3 Resources widened to "*", and moto's names for
    two S3 actions added next to AWS's (see the docstring and ``MOTO_S3_NAMES``)."""
    out = copy.deepcopy(policy)
    for stmt in out["Statement"]:
        resources = [stmt["Resource"]] if isinstance(stmt["Resource"], str) else stmt["Resource"]
        if not all(r.startswith("arn:aws:s3:::") for r in resources):
            stmt["Resource"] = "*"
            continue
        actions = [stmt["Action"]] if isinstance(stmt["Action"], str) else stmt["Action"]
        stmt["Action"] = actions + [MOTO_S3_NAMES[a] for a in actions if a in MOTO_S3_NAMES]
    return out


def spawn(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    text = out.out.strip()
    return code, (json.loads(text.splitlines()[-1]) if text.startswith(("{", "[")) else text), out.err





def _policy_versions(arn: str) -> list[dict[str, Any]]:
    return [dict(v) for v in boto3.client("iam").list_policy_versions(PolicyArn=arn)["Versions"]]


def _default_document(arn: str) -> Any:
    iam = boto3.client("iam")
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    return iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]


@pytest.mark.usefixtures("aws")
def test_setup_creates_then_leaves_alone_then_updates(capsys: pytest.CaptureFixture[str],
                                                     recorded: list[tuple[str, str]]) -> None:
    arn = boundary_arn(ACCOUNT)
    code, dry, err = spawn(capsys, "iam", "setup", "--dry-run", "--json")
    assert code == 0, err
    assert dry["state"] == "created" and dry["dry_run"] is True
    assert dry["steps"] == [f"would create policy {arn} ({compact_size(boundary_document())} "
                            "characters)"]
    assert not [op for _, op in recorded if op.startswith("Create")]  # a dry run only reads

    code, made, err = spawn(capsys, "iam", "setup", "--json")
    assert code == 0, err
    assert (made["boundary_arn"], made["state"]) == (arn, "created")
    policy = boto3.client("iam").get_policy(PolicyArn=arn)["Policy"]
    assert policy["Path"] == "/spawn/"
    assert _default_document(arn) == boundary_document()

    code, again, err = spawn(capsys, "iam", "setup", "--json")
    assert code == 0, err
    assert again["state"] == "unchanged" and len(_policy_versions(arn)) == 1

    # An older spawn (or a hand edit) left another document: setup brings it back.
    boto3.client("iam").create_policy_version(
        PolicyArn=arn, SetAsDefault=True, PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}))
    code, updated, err = spawn(capsys, "iam", "setup")
    assert code == 0, err
    assert "(updated)" in updated
    assert _default_document(arn) == boundary_document() and len(_policy_versions(arn)) == 3
    # Every call setup made is declared for the administrator (docs/iam.md lists the actions).
    admin = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": permissions.required_actions("admin"), "Resource": "*"}]}
    assert permissions.check_calls(recorded, admin, principal="admin") == []


@pytest.mark.usefixtures("aws")
def test_setup_deletes_the_oldest_version_when_five_exist(capsys: pytest.CaptureFixture[str]) -> None:
    iam = boto3.client("iam")
    arn = boundary_arn(ACCOUNT)
    assert main(["iam", "setup", "--json"]) == 0
    capsys.readouterr()
    first = _policy_versions(arn)[0]["VersionId"]
    for n in range(MAX_POLICY_VERSIONS - 1):
        iam.create_policy_version(PolicyArn=arn, SetAsDefault=True, PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "sqs:GetQueueUrl",
                            "Resource": f"arn:aws:sqs:*:*:q{n}"}]}))
    assert len(_policy_versions(arn)) == MAX_POLICY_VERSIONS
    code, result, err = spawn(capsys, "iam", "setup", "--json")
    assert code == 0, err
    assert result["state"] == "updated"
    assert any(f"delete version {first}" in step for step in result["steps"])
    versions = _policy_versions(arn)
    assert len(versions) == MAX_POLICY_VERSIONS and first not in {v["VersionId"] for v in versions}
    assert _default_document(arn) == boundary_document()


def test_setup_without_admin_rights_exits_3(aws: MotoServer, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    keys = iam_user(moto_view(scoped_policy()), "not-an-admin")
    become(monkeypatch, keys, enforcing=aws)
    code, _out, err = spawn(capsys, "iam", "setup")
    assert code == 3
    assert "iam:CreatePolicy" in err or "CreatePolicy" in err


def test_moto_cannot_see_resource_scoping(aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why ``moto_view`` exists: the real scoped policy, whose EC2 statements name instance ARNs,
    is refused by moto for every managed-instance call (moto compares against "*")."""
    keys = iam_user(scoped_policy(), "raw-scoped")
    become(monkeypatch, keys, enforcing=aws)
    ec2 = controller_aws.client("ec2", REGION)
    ec2.describe_instances()  # Resource "*": moto applies it
    with pytest.raises(Exception) as err:
        ec2.terminate_instances(InstanceIds=["i-0123456789abcdef0"])
    assert "UnauthorizedOperation" in str(err.value) or "AccessDenied" in str(err.value)


@pytest.fixture
def become_scoped(aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Switch to a new user holding only the scoped policy (as moto sees it), enforcement on."""
    def switch() -> None:
        become(monkeypatch, iam_user(moto_view(scoped_policy()), "spawner-scoped"), enforcing=aws)
    return switch


@pytest.mark.usefixtures("home")
def test_a_user_with_only_the_scoped_policy_runs_the_whole_lifecycle(
        become_scoped: Callable[[], None], capsys: pytest.CaptureFixture[str],
        recorded: list[tuple[str, str]], bundle: Path, ssh_key: Path) -> None:
    assert main(["iam", "setup", "--json"]) == 0  # the administrator, once
    capsys.readouterr()
    key = ssh_key
    become_scoped()
    recorded.clear()

    code, launched, err = spawn(capsys, "launch", "-t", "t3.micro", "--name", "scoped-1",
                                "--ttl", "2h", "--ssh-key", str(key), "--ssh-from",
                                "203.0.113.7/32", "--agent-bundle", str(bundle), "--no-wait",
                                "--json", "--region", REGION)
    assert code == 0, err
    iid = launched["instances"][0]["instance_id"]
    iam = controller_aws.client("iam")
    role = iam.get_role(RoleName=iam.list_roles(PathPrefix="/spawn/")["Roles"][0]["RoleName"])
    assert role["Role"]["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary_arn(ACCOUNT)
    assert any(k.startswith("bucket spawn-agent-") for k in launched["kept"])  # S3 scoping fits

    code, listed, err = spawn(capsys, "list", "--region", REGION, "--json")
    assert code == 0, err
    assert iid in json.dumps(listed)
    code, _out, err = spawn(capsys, "extend", iid, "+1h", "--region", REGION, "--json")
    assert code == 0, err
    code, _out, err = spawn(capsys, "stop", iid, "--region", REGION, "--json")
    assert code == 0, err
    controller_aws.client("ec2", REGION).get_waiter("instance_stopped").wait(
        InstanceIds=[iid], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    code, _out, err = spawn(capsys, "start", iid, "--region", REGION, "--json")
    assert code == 0, err
    code, ended, err = spawn(capsys, "terminate", iid, "--yes", "--region", REGION, "--json")
    assert code == 0, err
    assert iid in json.dumps(ended)

    # Every call made is declared, and the scoped policy grants each of its actions.
    assert permissions.check_calls(recorded, scoped_policy()) == []
    ops = {op for _, op in recorded}
    assert ops >= {"GetPolicy", "CreateRole", "PutRolePolicy", "CreateInstanceProfile",
                   "AddRoleToInstanceProfile", "ImportKeyPair", "CreateSecurityGroup",
                   "AuthorizeSecurityGroupIngress", "CreateBucket", "PutObject", "RunInstances",
                   "CreateTags", "StopInstances", "StartInstances", "TerminateInstances"}


@pytest.mark.usefixtures("aws")
def test_a_spawn_role_made_before_setup_gets_the_boundary_before_any_other_write(
        recorded: list[tuple[str, str]]) -> None:
    """With the scoped policy, PutRolePolicy on a role is allowed only once the role carries
    spawn's boundary (iam:PermissionsBoundary is the role's current boundary for that action):
    so the boundary goes first."""
    from controller.iam import IamRequest, plan, provision

    assert main(["iam", "setup", "--json"]) == 0
    provision(plan(IamRequest(role_name="made-before-setup")))
    recorded.clear()
    provision(plan(IamRequest(role_name="made-before-setup", account_boundary=boundary_arn(ACCOUNT))))
    writes = [op for _, op in recorded if op.startswith(("Put", "Attach", "Delete", "Detach"))]
    assert writes[0] == "PutRolePermissionsBoundary", writes
    assert "PutRolePolicy" in writes
    role = boto3.client("iam").get_role(RoleName="made-before-setup")["Role"]
    assert role["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary_arn(ACCOUNT)


def test_without_setup_a_refused_create_role_says_what_to_do(
        aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """moto cannot evaluate the boundary condition, so a user without CreateRole stands in for
    the refusal AWS gives a scoped user in an account where `spawn iam setup` never ran."""
    from controller.iam import IamRequest, plan, provision
    from controller.iam.cli_policy import policy
    from spored.errors import PermissionDenied

    no_create = copy.deepcopy(policy("minimal"))
    for stmt in no_create["Statement"]:
        stmt["Action"] = [a for a in stmt["Action"] if a != "iam:CreateRole"]
    become(monkeypatch, iam_user(no_create, "no-create-role"), enforcing=aws)
    with pytest.raises(PermissionDenied) as err:
        provision(plan(IamRequest()))
    assert "spawn iam setup" in (err.value.hint or "")


@pytest.mark.usefixtures("aws", "home")
def test_dry_run_shows_the_boundary_and_keeps_the_lint_warnings(
        capsys: pytest.CaptureFixture[str], bundle: Path) -> None:
    argv = ("launch", "-t", "t3.micro", "--ttl", "1h", "--iam-policy", "s3:ReadOnly",
            "--ssh-from", "203.0.113.7/32",
            "--agent-bundle", str(bundle), "--dry-run", "--json", "--region", REGION)
    code, before, err = spawn(capsys, *argv)
    assert code == 0, err
    assert before["iam"]["permissions_boundary"] is None  # no setup yet: no boundary
    # parliament's findings on the composed role (not recomputed when the plan is redone)
    lint_warnings = [w for w in before["iam"]["warnings"] if w.startswith("spawn-templates:")]
    assert lint_warnings
    assert main(["iam", "setup", "--json"]) == 0
    capsys.readouterr()
    code, after, err = spawn(capsys, *argv)
    assert code == 0, err
    assert after["iam"]["permissions_boundary"] == boundary_arn(ACCOUNT)
    assert after["iam"]["role_name"] != before["iam"]["role_name"]
    assert set(lint_warnings) <= set(after["iam"]["warnings"])
