"""`spawn launch` lints the whole composed role before creating anything: the agent's policy, the
templates, the policy file, customer managed policies and the permissions boundary. A lint error
exits 2 and leaves no role, profile or instance behind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from controller import aws as controller_aws
from controller.cli import main
from tests.conftest import MotoServer

REGION = "us-east-1"
WRITE_PREFIXES = ("Create", "Put", "Run", "Import", "Authorize", "Delete", "Terminate", "Attach",
                  "Add", "Upload", "Start", "Stop", "Tag", "Remove", "Detach")

# The self-scoping shape AWS never matches: aws:ARN is no condition key of any EC2 action.
AWS_ARN_SELF_SCOPE = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Action": "ec2:TerminateInstances", "Resource": "arn:aws:ec2:*:*:instance/*",
    "Condition": {"StringEquals": {"aws:ARN": "${ec2:SourceInstanceARN}"}}}]}
CLEAN = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::results/*"}]}




@pytest.fixture
def writes() -> Iterator[list[str]]:
    seen: list[str] = []

    def hook(_service: str, operation: str) -> None:
        if operation.startswith(WRITE_PREFIXES):
            seen.append(operation)

    controller_aws.CALL_HOOKS.append(hook)
    yield seen
    controller_aws.CALL_HOOKS.remove(hook)


def _customer_policy(name: str, document: dict[str, Any]) -> str:
    arn: str = boto3.client("iam").create_policy(
        PolicyName=name, PolicyDocument=json.dumps(document))["Policy"]["Arn"]
    return arn


def _launch(capsys: pytest.CaptureFixture[str], bundle: Path, *argv: str) -> tuple[int, str]:
    code = main(["launch", "-t", "t3.micro", "--region", REGION, "--agent-bundle", str(bundle),
                 *argv])
    out = capsys.readouterr()
    return code, out.out + out.err


def _nothing_created() -> None:
    iam = boto3.client("iam")
    assert iam.list_roles()["Roles"] == []
    assert iam.list_instance_profiles()["InstanceProfiles"] == []
    reservations = boto3.client("ec2", region_name=REGION).describe_instances()["Reservations"]
    assert reservations == []


@pytest.mark.usefixtures("home")
def test_customer_managed_policy_with_an_unknown_condition_key_stops_the_launch(
        aws: MotoServer, capsys: pytest.CaptureFixture[str], bundle: Path,
        writes: list[str]) -> None:
    arn = _customer_policy("self-scope-aws-arn", AWS_ARN_SELF_SCOPE)
    code, text = _launch(capsys, bundle, "--iam-managed-policies", arn)
    assert code == 2, text
    assert "--iam-managed-policies" in text and "UNKNOWN_CONDITION_FOR_ACTION" in text
    assert "aws:ARN" in text
    assert writes == []
    _nothing_created()


@pytest.mark.usefixtures("home")
def test_boundary_with_an_unknown_condition_key_stops_the_launch(
        aws: MotoServer, capsys: pytest.CaptureFixture[str], bundle: Path,
        writes: list[str]) -> None:
    arn = _customer_policy("boundary-aws-arn", AWS_ARN_SELF_SCOPE)
    code, text = _launch(capsys, bundle, "--iam-permissions-boundary", arn)
    assert code == 2, text
    assert "--iam-permissions-boundary" in text and "UNKNOWN_CONDITION_FOR_ACTION" in text
    assert writes == []
    _nothing_created()


@pytest.mark.usefixtures("home")
def test_policy_file_with_the_aws_arn_self_scope_stops_the_launch(
        aws: MotoServer, capsys: pytest.CaptureFixture[str], bundle: Path, tmp_path: Path,
        writes: list[str]) -> None:
    """The finding the old lint downgraded to a warning (by its message text) is an error."""
    path = tmp_path / "self.json"
    path.write_text(json.dumps(AWS_ARN_SELF_SCOPE, indent=2))
    code, text = _launch(capsys, bundle, "--iam-policy-file", str(path))
    assert code == 2, text
    assert "--iam-policy-file" in text and "Unknown condition aws:ARN" in text
    assert writes == []
    _nothing_created()


@pytest.mark.usefixtures("home")
def test_a_managed_policy_that_does_not_exist_stops_the_launch(
        aws: MotoServer, capsys: pytest.CaptureFixture[str], bundle: Path,
        writes: list[str]) -> None:
    code, text = _launch(capsys, bundle, "--iam-managed-policies",
                         "arn:aws:iam::123456789012:policy/not-there")
    assert code == 2, text
    assert "not-there: no such managed policy" in text
    assert writes == []
    _nothing_created()


@pytest.mark.usefixtures("home")
def test_clean_role_parts_pass_the_lint(aws: MotoServer, capsys: pytest.CaptureFixture[str],
                                        bundle: Path, writes: list[str]) -> None:
    arn = _customer_policy("clean", CLEAN)
    code, text = _launch(capsys, bundle, "--dry-run", "--iam-policy", "s3:ReadOnly@results",
                         "--iam-managed-policies",
                         f"{arn},arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore")
    assert code == 0, text
    assert "lint error" not in text and "UNKNOWN_CONDITION" not in text
    assert writes == []
