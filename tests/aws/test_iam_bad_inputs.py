"""Bad IAM input: exit 2, a message naming the problem, and nothing created in IAM or EC2.

File-borne problems go through `spawn iam lint FILE`, template problems through `spawn iam show`,
flag problems through `request_from_args` + `plan` on a parser from `add_iam_arguments` (the
launch command's own tests drive the same through `spawn launch`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller import aws as controller_aws
from controller.cli import main
from controller.iam import add_iam_arguments, plan, request_from_args
from spored.errors import ExitStatus, SpawnError
from tests.conftest import MotoServer

# one moto reset for the module (a module-scoped fixture): its tests stay on one xdist worker
pytestmark = pytest.mark.xdist_group("test_iam_bad_inputs")

GOOD_STATEMENT = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}


@pytest.fixture(scope="module")
def clean_server(cloud: MotoServer) -> Iterator[MotoServer]:
    """One reset for the module (conftest's ``cloud``), and a controller session made for it."""
    controller_aws.session.cache_clear()
    yield cloud
    controller_aws.session.cache_clear()


@pytest.fixture
def untouched(clean_server: MotoServer, recorded: list[tuple[str, str]]) -> Iterator[MotoServer]:
    """The test makes no AWS call at all, and afterwards no role, profile, policy or instance
    exists in the moto server."""
    yield clean_server
    assert recorded == []
    iam = controller_aws.client("iam")
    assert iam.list_roles()["Roles"] == []
    assert iam.list_instance_profiles()["InstanceProfiles"] == []
    assert iam.list_policies(Scope="Local")["Policies"] == []
    assert controller_aws.client("ec2").describe_instances()["Reservations"] == []


def _write(tmp_path: Path, content: str | dict[str, Any]) -> str:
    path = tmp_path / "policy.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2))
    return str(path)


def _lint(capsys: pytest.CaptureFixture[str], path: str) -> str:
    code = main(["iam", "lint", path])
    captured = capsys.readouterr()
    assert code == ExitStatus.USAGE
    return captured.out + captured.err


def _flags(*argv: str) -> SpawnError:
    parser = argparse.ArgumentParser()
    add_iam_arguments(parser)
    with pytest.raises(SpawnError) as err:
        plan(request_from_args(parser.parse_args(list(argv))))
    assert err.value.exit_status == ExitStatus.USAGE
    return err.value


# -- through `spawn iam lint FILE` ---------------------------------------------------------------
def test_malformed_json(untouched: MotoServer, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    out = _lint(capsys, _write(tmp_path, '{"Version": "2012-10-17",\n "Statement": [}\n'))
    assert "invalid JSON at line 2, column 16" in out


def test_missing_version(untouched: MotoServer, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    out = _lint(capsys, _write(tmp_path, {"Statement": [GOOD_STATEMENT]}))
    assert "Version must be" in out


def test_bad_effect(untouched: MotoServer, tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    out = _lint(capsys, _write(tmp_path, {"Version": "2012-10-17", "Statement": [
        {**GOOD_STATEMENT, "Effect": "Permit"}]}))
    assert 'Effect must be "Allow" or "Deny"' in out


def test_unknown_condition_operator(untouched: MotoServer, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = _lint(capsys, _write(tmp_path, {"Version": "2012-10-17", "Statement": [
        {**GOOD_STATEMENT, "Condition": {"StringEqualz": {"aws:username": "me"}}}]}))
    assert "unknown condition operator 'StringEqualz'" in out


def test_principal_in_identity_policy(untouched: MotoServer, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = _lint(capsys, _write(tmp_path, {"Version": "2012-10-17", "Statement": [
        {**GOOD_STATEMENT, "Principal": "*"}]}))
    assert "Principal" in out


def test_unknown_action_found_by_parliament(untouched: MotoServer, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = _lint(capsys, _write(tmp_path, {"Version": "2012-10-17", "Statement": [
        {**GOOD_STATEMENT, "Action": "s3:GetObjekt"}]}))
    assert "UNKNOWN_ACTION" in out and "s3:GetObjekt" in out
    assert "policy.json:6:" in out  # line of the finding in the file


def test_malformed_arn_found_by_parliament(untouched: MotoServer, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = _lint(capsys, _write(tmp_path, {"Version": "2012-10-17", "Statement": [
        {**GOOD_STATEMENT, "Resource": "arn:aws:s3:my-bucket"}]}))
    assert "INVALID_ARN" in out


def test_condition_key_the_action_does_not_support(untouched: MotoServer, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # The seed's own bug: a resource-tag condition on DescribeInstances never allows it.
    out = _lint(capsys, _write(tmp_path, {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ec2:DescribeInstances", "Resource": "*",
         "Condition": {"StringEquals": {"ec2:ResourceTag/spawn:managed": "true"}}}]}))
    assert "UNKNOWN_CONDITION_FOR_ACTION" in out and "ec2:DescribeInstances" in out


def test_oversize_policy(untouched: MotoServer, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    statements = [{"Sid": f"S{i}", "Effect": "Allow", "Action": "s3:GetObject",
                   "Resource": f"arn:aws:s3:::bucket-number-{i}/some/long/prefix/*"}
                  for i in range(150)]
    out = _lint(capsys, _write(tmp_path, {"Version": "2012-10-17", "Statement": statements}))
    assert "over the AWS limit of 10240 characters per role" in out


def test_policy_file_missing(untouched: MotoServer, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    out = _lint(capsys, str(tmp_path / "nope.json"))
    assert "nope.json: no such file" in out


def test_lint_json_reports_errors(untouched: MotoServer, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, {"Version": "2012-10-17", "Statement": [
        {**GOOD_STATEMENT, "Action": "sqs:SendMessageBatch"}]})
    assert main(["iam", "lint", path, "--json"]) == ExitStatus.USAGE
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert [e["issue"] for e in report["errors"]] == ["UNKNOWN_ACTION"]


# -- through `spawn iam show NAME` ---------------------------------------------------------------
@pytest.mark.parametrize(("name", "needle"), [
    ("s3:ReadOly", "did you mean s3:ReadOnly?"),
    ("dynamo:ReadOnly", "did you mean dynamodb:ReadOnly?"),
    ("s3:ReadOnly@Bad_Bucket", "'Bad_Bucket' is not a valid s3 scope"),
    ("sqs:WriteOnly@", "nothing after '@'"),
    ("s3:ReadOnly@arn:aws:s3:::bucket", "give a name, not an ARN"),
])
def test_bad_template_names(untouched: MotoServer, capsys: pytest.CaptureFixture[str],
                            name: str, needle: str) -> None:
    assert main(["iam", "show", name]) == ExitStatus.USAGE
    assert needle in capsys.readouterr().err


# -- through the launch flags (request_from_args + plan) ----------------------------------------
def test_unknown_template_in_list(untouched: MotoServer) -> None:
    err = _flags("--iam-policy", "s3:ReadOnly,logs:WriteOnyl")
    assert "unknown template 'logs:WriteOnyl'" in err.message
    assert err.hint == "did you mean logs:WriteOnly?"


def test_empty_template_entry(untouched: MotoServer) -> None:
    assert "empty template entry" in _flags("--iam-policy", "s3:ReadOnly,,").message


def test_bad_managed_policy_account(untouched: MotoServer) -> None:
    err = _flags("--iam-managed-policies", "arn:aws:iam::12345:policy/Mine")
    assert err.message.startswith("--iam-managed-policies: 'arn:aws:iam::12345:policy/Mine' is not "
                                  "a policy ARN")


def test_bad_managed_policy_partition(untouched: MotoServer) -> None:
    err = _flags("--iam-managed-policies", "arn:aws-mars:iam::aws:policy/ReadOnlyAccess")
    assert "aws-mars" in err.message and "aws-cn" in err.message


def test_managed_policy_that_is_a_role_arn(untouched: MotoServer) -> None:
    err = _flags("--iam-managed-policies", "arn:aws:iam::123456789012:role/admin")
    assert "policy/" in err.message


def test_too_many_managed_policies(untouched: MotoServer) -> None:
    arns = ",".join(f"arn:aws:iam::aws:policy/Policy{i}" for i in range(11))
    err = _flags("--iam-managed-policies", arns)
    assert "11 managed policies exceed the AWS limit of 10" in err.message


def test_bad_permissions_boundary(untouched: MotoServer) -> None:
    err = _flags("--iam-permissions-boundary", "arn:aws:iam::123456789012:user/bob")
    assert err.message.startswith("--iam-permissions-boundary:")


def test_bad_role_name(untouched: MotoServer) -> None:
    err = _flags("--iam-role", "my role!")
    assert err.message.startswith("--iam-role: 'my role!' is not a role name")


def test_policy_file_with_parliament_error_stops_the_request(untouched: MotoServer,
                                                             tmp_path: Path) -> None:
    path = _write(tmp_path, {"Version": "2012-10-17", "Statement": [
        {**GOOD_STATEMENT, "Action": "s3:GetObjekt"}]})
    err = _flags("--iam-policy-file", path)
    assert err.message.startswith("--iam-policy-file:") and "s3:GetObjekt" in err.message


def test_templates_plus_file_over_the_size_limit(untouched: MotoServer, tmp_path: Path) -> None:
    statements = [{"Sid": f"S{i}", "Effect": "Allow", "Action": "s3:GetObject",
                   "Resource": f"arn:aws:s3:::bucket-number-{i}/prefix/*"} for i in range(110)]
    path = _write(tmp_path, {"Version": "2012-10-17", "Statement": statements})
    err = _flags("--iam-policy", "s3:ReadOnly", "--iam-policy-file", path)
    assert "10240 characters per role" in err.message
