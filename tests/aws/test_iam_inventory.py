"""`spawn iam roles` and `spawn iam cleanup` against the moto server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller import aws as controller_aws
from controller.cli import main
from controller.iam import plan, provision
from controller.iam.compose import IamRequest
from controller.iam.templates import parse_list
from tests.conftest import MotoServer

S3_READ = "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"


def _run(profile_arn: str, region: str = "us-east-1") -> str:
    ec2 = controller_aws.client("ec2", region)
    image = controller_aws.client("ssm", region).get_parameter(
        Name="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
    )["Parameter"]["Value"]
    got = ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1,
                            IamInstanceProfile={"Arn": profile_arn})
    return str(got["Instances"][0]["InstanceId"])


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert main([*argv, "--region", "us-east-1", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_roles_lists_spawn_roles_and_their_instances(aws: MotoServer,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    used = provision(plan(IamRequest()))
    idle = provision(plan(IamRequest(templates=parse_list("s3:ReadOnly"))))
    iid = _run(used.profile_arn)
    controller_aws.client("iam").create_role(
        RoleName="not-spawns", AssumeRolePolicyDocument="{}", Path="/spawn/")
    rows = {r["role_name"]: r for r in _cli(capsys, "iam", "roles")["roles"]}
    assert set(rows) == {used.role_name, idle.role_name}
    assert rows[used.role_name]["instances"] == [f"us-east-1/{iid}"]
    assert rows[used.role_name]["in_use"]
    assert rows[idle.role_name]["instances"] == []
    assert rows[used.role_name]["profiles"] == [{"name": used.profile_name,
                                                "arn": used.profile_arn}]


def test_cleanup_dry_run_then_yes(aws: MotoServer, capsys: pytest.CaptureFixture[str]) -> None:
    iam = controller_aws.client("iam")
    used = provision(plan(IamRequest()))
    idle = provision(plan(IamRequest(templates=parse_list("sqs:ReadOnly"),
                                      managed_policy_arns=(S3_READ,))))
    named = provision(plan(IamRequest(role_name="keep-me")))
    finished = provision(plan(IamRequest(templates=parse_list("ssm:ReadOnly"))))
    _run(used.profile_arn)
    ended = _run(finished.profile_arn)
    controller_aws.client("ec2").terminate_instances(InstanceIds=[ended])
    iam.create_instance_profile(InstanceProfileName="spawn-orphan", Path="/spawn/")

    dry = _cli(capsys, "iam", "cleanup")
    assert dry["dry_run"] is True and dry["done"] == []
    assert {r["role_name"] for r in dry["delete_roles"]} == {idle.role_name, finished.role_name}
    assert {r["role_name"] for r in dry["keep_roles"]} == {used.role_name, named.role_name}
    assert dry["delete_empty_profiles"] == ["spawn-orphan"]
    assert len(iam.list_roles(PathPrefix="/spawn/")["Roles"]) == 4  # nothing deleted

    done = _cli(capsys, "iam", "cleanup", "--yes")
    assert f"detached {S3_READ} from role {idle.role_name}" in done["done"]
    remaining = {r["RoleName"] for r in iam.list_roles(PathPrefix="/spawn/")["Roles"]}
    assert remaining == {used.role_name, named.role_name}
    profiles = {p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]}
    assert profiles == {used.profile_name, named.profile_name}

    _cli(capsys, "iam", "cleanup", "--yes", "--include-named")
    remaining = {r["RoleName"] for r in iam.list_roles(PathPrefix="/spawn/")["Roles"]}
    assert remaining == {used.role_name}


def test_cleanup_human_output_says_dry_run(aws: MotoServer,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    idle = provision(plan(IamRequest()))
    assert main(["iam", "cleanup", "--region", "us-east-1"]) == 0
    out = capsys.readouterr().out
    assert f"would delete role {idle.role_name}" in out
    assert "dry run: pass --yes to delete" in out


def test_by_default_every_region_is_searched(aws: MotoServer,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # Roles are global: an instance in another region keeps its role "in use".
    used = provision(plan(IamRequest(templates=parse_list("logs:WriteOnly"))))
    iid = _run(used.profile_arn, "eu-west-1")
    assert main(["iam", "cleanup", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["delete_roles"] == []
    assert dry["keep_roles"] == [{"role_name": used.role_name,
                                  "reason": f"used by eu-west-1/{iid}"}]
