"""A user holding only `spawn iam cli-policy` completes `spawn launch` (moto, IAM enforcement on).

moto enforces actions only (see the shared notes); every operation the launch made is also checked
against the declared permissions and the printed policy.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from controller import aws as controller_aws
from controller import permissions
from controller.cli import main
from tests.conftest import MotoServer

REGION = "us-east-1"
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq2lNH3Xk7GZqj0m8r2vJ0eP7Wq7l1v3yJd0QmFvYtB me@laptop"


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SPAWN_AGENT_BUNDLE", raising=False)
    bundle = tmp_path / "spored-bundle-0.0.test.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:
        data = b"#!/bin/sh\necho installing\n"
        info = tarfile.TarInfo("spored-bundle-0.0.test/install.sh")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    key = tmp_path / "id_ed25519.pub"
    key.write_text(ED25519 + "\n")
    return {"bundle": str(bundle), "key": str(key)}


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
    iam = controller_aws.client("iam")
    iam.create_user(UserName="launcher")
    arn = iam.create_policy(PolicyName="spawn-cli", PolicyDocument=json.dumps(granted))
    iam.attach_user_policy(UserName="launcher", PolicyArn=arn["Policy"]["Arn"])
    key = iam.create_access_key(UserName="launcher")["AccessKey"]
    aws.enforce_iam(True)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    controller_aws.session.cache_clear()
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
