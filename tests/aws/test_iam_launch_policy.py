"""A user holding only `spawn iam cli-policy` completes `spawn launch` (moto, IAM enforcement on).

moto enforces actions only (see the shared notes); every operation the launch made is also checked
against the declared permissions and the printed policy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller import permissions
from controller.cli import main
from tests.aws.iam_users import become, iam_user
from tests.conftest import MotoServer

REGION = "us-east-1"


@pytest.fixture
def files(home: Path, bundle: Path, ssh_key: Path) -> dict[str, str]:
    return {"bundle": str(bundle), "key": str(ssh_key)}


def test_minimal_policy_user_launches_with_defaults_and_templates(
        aws: MotoServer, monkeypatch: pytest.MonkeyPatch, files: dict[str, str],
        recorded: list[tuple[str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["iam", "cli-policy", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    granted = json.loads(json.dumps(printed))
    # moto's S3 names the action of HEAD bucket "s3:HeadBucket", which is no IAM action: AWS
    # authorizes HeadBucket with s3:ListBucket (in the printed policy; checked below).
    granted["Statement"].append({"Sid": "MotoHeadBucketName", "Effect": "Allow",
                                 "Action": "s3:HeadBucket", "Resource": "*"})
    become(monkeypatch, iam_user(granted, "launcher"), enforcing=aws)
    recorded.clear()

    common = ["launch", "--instance-type", "t3.micro", "--ttl", "1h", "--ssh-key", files["key"],
              "--ssh-from", "203.0.113.7/32",
              "--agent-bundle", files["bundle"], "--no-wait", "--json", "--region", REGION]
    for extra in ([], ["--iam-policy", "s3:ReadOnly@my-bucket/in/*,logs:WriteOnly"]):
        code = main([*common, *extra])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert json.loads(captured.out)["instances"]

    assert permissions.check_calls(recorded, printed) == []
    assert ("ec2", "RunInstances") in recorded and ("iam", "CreateRole") in recorded
