"""Provisioning against the moto server: roles, profiles, named roles, concurrency, rollback."""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from controller import aws as controller_aws
from controller.iam import (
    Provisioned,
    add_iam_arguments,
    agent_policy_document,
    plan,
    provision,
    request_from_args,
    rollback,
)
from controller.iam.compose import POLICY_AGENT, POLICY_CUSTOM, POLICY_TEMPLATES, TRUST_POLICY
from spored.errors import ExitStatus, ValidationError
from tests.conftest import MotoServer

S3_READ = "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"
BOUNDARY = "arn:aws:iam::aws:policy/PowerUserAccess"


def _iam() -> Any:
    return controller_aws.client("iam")


def _plan(*argv: str):  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser()
    add_iam_arguments(parser)
    return plan(request_from_args(parser.parse_args(list(argv))))


def _inline(role: str) -> dict[str, Any]:
    iam = _iam()
    names = iam.list_role_policies(RoleName=role)["PolicyNames"]
    return {n: iam.get_role_policy(RoleName=role, PolicyName=n)["PolicyDocument"] for n in names}


def _profile_roles(name: str) -> list[str]:
    profile = _iam().get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    return [r["RoleName"] for r in profile["Roles"]]


def test_default_role_and_profile(aws: MotoServer) -> None:
    p = _plan()
    got = provision(p)
    role = _iam().get_role(RoleName=p.role_name)["Role"]
    assert role["Path"] == "/spawn/"
    assert role["AssumeRolePolicyDocument"] == TRUST_POLICY
    assert {t["Key"]: t["Value"] for t in role["Tags"]}["spawn:managed"] == "true"
    assert _inline(p.role_name) == {POLICY_AGENT: agent_policy_document()}
    assert _profile_roles(got.profile_name) == [p.role_name]
    assert got.profile_arn.endswith(f":instance-profile/spawn/{p.role_name}")
    assert got.run_instances_profile() == {"Arn": got.profile_arn}
    assert got.created == [f"role {p.role_name} (path /spawn/)",
                           f"instance-profile {p.role_name} (path /spawn/)",
                           f"profile-role {p.role_name} (role {p.role_name} added)"]


def test_second_equal_provision_reuses_and_creates_nothing(aws: MotoServer) -> None:
    first = provision(_plan("--iam-policy", "s3:ReadOnly"))
    second = provision(_plan("--iam-policy", "s3:ReadOnly"))
    assert second.role_name == first.role_name and second.profile_arn == first.profile_arn
    assert second.created == []


def test_templates_file_managed_and_boundary_together(aws: MotoServer, tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::my-bucket/*"}]}))
    p = _plan("--iam-policy", "s3:ReadOnly@my-bucket,logs:WriteOnly", "--iam-policy-file",
              str(path), "--iam-managed-policies", S3_READ, "--iam-permissions-boundary",
              BOUNDARY)
    provision(p)
    inline = _inline(p.role_name)
    assert set(inline) == {POLICY_AGENT, POLICY_TEMPLATES, POLICY_CUSTOM}
    assert inline[POLICY_AGENT] == agent_policy_document()
    assert inline[POLICY_CUSTOM]["Statement"][0]["Resource"] == "arn:aws:s3:::my-bucket/*"
    attached = _iam().list_attached_role_policies(RoleName=p.role_name)["AttachedPolicies"]
    assert [a["PolicyArn"] for a in attached] == [S3_READ]
    role = _iam().get_role(RoleName=p.role_name)["Role"]
    assert role["PermissionsBoundary"]["PermissionsBoundaryArn"] == BOUNDARY


def test_named_role_created_when_absent_and_brought_in_line(aws: MotoServer) -> None:
    first = provision(_plan("--iam-role", "ml-training", "--iam-policy", "s3:FullAccess"))
    assert first.role_name == "ml-training"
    assert set(_inline("ml-training")) == {POLICY_AGENT, POLICY_TEMPLATES}
    provision(_plan("--iam-role", "ml-training", "--iam-managed-policies", S3_READ,
                    "--iam-permissions-boundary", BOUNDARY))
    assert set(_inline("ml-training")) == {POLICY_AGENT}  # templates no longer asked for
    role = _iam().get_role(RoleName="ml-training")["Role"]
    assert role["PermissionsBoundary"]["PermissionsBoundaryArn"] == BOUNDARY
    attached = _iam().list_attached_role_policies(RoleName="ml-training")["AttachedPolicies"]
    assert [a["PolicyArn"] for a in attached] == [S3_READ]
    # Reuse without flags keeps what is there and still has the agent's permissions.
    again = provision(_plan("--iam-role", "ml-training"))
    assert again.created == [] and again.warnings == []
    assert _inline("ml-training")[POLICY_AGENT] == agent_policy_document()


def _foreign_role(name: str, policy: dict[str, Any] | None = None) -> None:
    iam = _iam()
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST_POLICY))
    if policy:
        iam.put_role_policy(RoleName=name, PolicyName="theirs", PolicyDocument=json.dumps(policy))
    iam.create_instance_profile(InstanceProfileName=name)
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)


def test_foreign_role_without_agent_permissions_stops_with_the_statement(aws: MotoServer) -> None:
    _foreign_role("their-role", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]})
    with pytest.raises(ValidationError) as err:
        provision(_plan("--iam-role", "their-role"))
    assert err.value.exit_status == ExitStatus.USAGE
    assert "their-role lacks the agent's permissions" in err.value.message
    assert '"ec2:SourceInstanceARN": "arn:aws:ec2:*:*:instance/${ec2:InstanceId}"' in err.value.message
    assert "--force" in (err.value.hint or "")
    assert set(_inline("their-role")) == {"theirs"}  # untouched


def test_foreign_role_with_force_warns_loudly(aws: MotoServer) -> None:
    _foreign_role("their-role")
    got = provision(_plan("--iam-role", "their-role", "--force"))
    assert got.profile_name == "their-role"
    assert got.created == []
    assert "WILL NOT BE ABLE TO STOP OR TERMINATE ITSELF" in got.warnings[0]


def test_foreign_role_with_agent_permissions_in_a_managed_policy_is_accepted(
        aws: MotoServer) -> None:
    iam = _iam()
    arn = iam.create_policy(PolicyName="agent-ish", PolicyDocument=json.dumps(
        agent_policy_document()))["Policy"]["Arn"]
    _foreign_role("their-role")
    iam.attach_role_policy(RoleName="their-role", PolicyArn=arn)
    got = provision(_plan("--iam-role", "their-role"))
    assert got.warnings == [] and got.created == []


def test_profile_without_its_role_is_repaired(aws: MotoServer) -> None:
    p = _plan("--iam-policy", "sqs:ReadOnly")
    _iam().create_instance_profile(InstanceProfileName=p.profile_name, Path="/spawn/")
    got = provision(p)
    assert _profile_roles(p.profile_name) == [p.role_name]
    assert f"profile-role {p.profile_name} (role {p.role_name} added)" in got.created


def test_concurrent_provisioning_of_the_same_role_both_succeed(aws: MotoServer) -> None:
    p = _plan("--iam-policy", "dynamodb:ReadOnly@my-table")
    results: list[Provisioned] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def launch() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(provision(p))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=launch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(results) == 4
    assert {r.profile_arn for r in results} == {results[0].profile_arn}
    assert _profile_roles(p.profile_name) == [p.role_name]
    roles = [r["RoleName"] for r in _iam().list_roles(PathPrefix="/spawn/")["Roles"]]
    assert roles == [p.role_name]
    # Exactly one caller created each piece.
    all_created = [c for r in results for c in r.created]
    assert all_created.count(f"role {p.role_name} (path /spawn/)") == 1


def test_rollback_keeps_content_addressed_role(aws: MotoServer) -> None:
    got = provision(_plan("--iam-policy", "ssm:ReadOnly"))
    report = rollback(got)
    assert all(line.startswith("kept ") for line in report)
    assert _profile_roles(got.profile_name) == [got.role_name]


def test_rollback_deletes_a_named_role_this_call_created(aws: MotoServer) -> None:
    got = provision(_plan("--iam-role", "one-off", "--iam-policy", "s3:ReadOnly",
                          "--iam-managed-policies", S3_READ))
    report = rollback(got)
    assert "deleted role one-off" in report
    assert "deleted instance-profile one-off" in report
    iam = _iam()
    assert iam.list_roles()["Roles"] == []
    assert iam.list_instance_profiles()["InstanceProfiles"] == []


def test_foreign_role_with_the_old_aws_arn_agent_statements_is_refused(aws: MotoServer) -> None:
    """Granting the actions on paper is not enough: the aws:ARN self-scoping (spawn's own policy
    until it was replaced, and the statement its error message used to print) never matches on
    AWS, and lint says so."""
    old = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ec2:DescribeTags", "Resource": "*"},
        {"Effect": "Allow", "Action": ["ec2:StopInstances", "ec2:TerminateInstances",
                                       "ec2:CreateTags"],
         "Resource": "arn:aws:ec2:*:*:instance/*",
         "Condition": {"StringEquals": {"ec2:ResourceTag/spawn:managed": "true",
                                        "aws:ARN": "${ec2:SourceInstanceARN}"}}}]}
    _foreign_role("their-role", old)
    with pytest.raises(ValidationError) as err:
        provision(_plan("--iam-role", "their-role"))
    assert "UNKNOWN_CONDITION_FOR_ACTION: Unknown condition aws:ARN" in err.value.message
    assert '"ec2:SourceInstanceARN": "arn:aws:ec2:*:*:instance/${ec2:InstanceId}"' in err.value.message
    assert set(_inline("their-role")) == {"theirs"}  # untouched
    forced = provision(_plan("--iam-role", "their-role", "--force"))
    assert "MAY NOT BE ABLE TO STOP OR TERMINATE ITSELF" in forced.warnings[0]
