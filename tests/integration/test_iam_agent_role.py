"""The agent (a subprocess, credentials only from the IMDS emulator) with roles spawn provisioned.

* With the role spawn creates by default (the agent's policy only), the agent ends its instance at
  its deadline, and every AWS call it logged is declared for the agent and granted by the policy.
* Under moto's IAM enforcement, a role lacking the agent's permissions leaves the instance running
  (AccessDenied): why every role spawn creates or updates carries the agent's policy.

moto's enforcement cannot run the positive case: it matches a statement's Resource against "*"
only, so the agent policy's statements scoped to ``arn:aws:ec2:*:*:instance/*`` never apply there
(and it ignores conditions). The conditions are evaluated in tests/unit/test_iam_agent_matrix.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from controller import aws as controller_aws
from controller import permissions
from controller.iam import agent_policy_document, plan, provision
from controller.iam.compose import TRUST_POLICY, IamRequest
from controller.sandbox.imds_emulator import ImdsEmulator
from spored.contract import format_timestamp
from tests.conftest import MotoServer

REGION = "us-east-1"
CONFIG = """
tick = "1s"
spot_poll = "1s"
tag_refresh = "1s"
tag_refresh_api = "2s"
completion_delay = "2s"
boot_grace = "1s"
wall = false
warn_at = ["1s"]
"""
CHILD_DROPS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
               "AWS_EC2_METADATA_DISABLED", "AWS_REGION", "AWS_DEFAULT_REGION", "NOTIFY_SOCKET")


@pytest.fixture
def admin(aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.session.Session]:
    """An admin user's session: the test's and the emulator's own calls keep working once IAM
    enforcement is on."""
    iam = controller_aws.client("iam")
    iam.create_user(UserName="admin")
    iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*",
                                                 "Resource": "*"}]}))
    key = iam.create_access_key(UserName="admin")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    controller_aws.session.cache_clear()
    yield boto3.session.Session(region_name=REGION)
    controller_aws.session.cache_clear()


def _launch(session: boto3.session.Session, profile_arn: str, deadline: datetime) -> str:
    tags = {"spawn:managed": "true", "spawn:expires-at": format_timestamp(deadline)}
    resp = session.client("ec2").run_instances(
        ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="t3.micro",
        IamInstanceProfile={"Arn": profile_arn},
        MetadataOptions={"HttpTokens": "required", "InstanceMetadataTags": "enabled"},
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])
    return str(resp["Instances"][0]["InstanceId"])


def _state(session: boto3.session.Session, iid: str) -> str:
    res = session.client("ec2").describe_instances(InstanceIds=[iid])["Reservations"][0]
    return str(res["Instances"][0]["State"]["Name"])


def _events(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _run(aws: MotoServer, session: boto3.session.Session, profile_arn: str,
         tmp_path: Path, *, enforce: bool) -> tuple[str, str, Path]:
    """Launch, fetch the role's credentials through the emulator once (sts:AssumeRole happens
    there, before any enforcement), optionally switch enforcement on, run the agent until the instance ends or
    25 s pass. Returns (instance id, final state, agent log)."""
    import requests

    deadline = (datetime.now(UTC) + timedelta(seconds=8)).replace(microsecond=0)
    iid = _launch(session, profile_arn, deadline)
    emulator = ImdsEmulator(iid, REGION, aws.url, session=session).start()
    token = requests.put(f"{emulator.url}/latest/api/token", timeout=5,
                         headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}).text
    base = f"{emulator.url}/latest/meta-data/iam/security-credentials/"
    role = requests.get(base, headers={"X-aws-ec2-metadata-token": token}, timeout=10).text.strip()
    creds = requests.get(base + role, headers={"X-aws-ec2-metadata-token": token}, timeout=10)
    assert creds.json()["Code"] == "Success"
    if enforce:
        aws.enforce_iam(True)
    (tmp_path / "spored.d").mkdir()
    (tmp_path / "run").mkdir(mode=0o750)
    config = tmp_path / "spored.toml"
    config.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if k not in CHILD_DROPS}
    env.update({"AWS_ENDPOINT_URL": aws.url, "AWS_EC2_METADATA_SERVICE_ENDPOINT": emulator.url,
                "STATE_DIRECTORY": str(tmp_path / "state"),
                "RUNTIME_DIRECTORY": str(tmp_path / "run"),
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull})
    log = tmp_path / "agent.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "spored.cli", "--config", str(config),
                                 "run"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        state = _state(session, iid)
        end = time.monotonic() + 25
        while time.monotonic() < end and state not in {"shutting-down", "terminated"}:
            time.sleep(0.5)
            state = _state(session, iid)
        return iid, state, log
    finally:
        proc.kill()
        proc.wait(timeout=10)
        emulator.stop()


def test_agent_ends_its_instance_with_the_default_spawn_role(
        aws: MotoServer, admin: boto3.session.Session, tmp_path: Path) -> None:
    provisioned = provision(plan(IamRequest()))
    inline = controller_aws.client("iam").list_role_policies(RoleName=provisioned.role_name)
    assert inline["PolicyNames"] == ["spawn-agent"]
    _, state, log = _run(aws, admin, provisioned.profile_arn, tmp_path, enforce=False)
    assert state in {"shutting-down", "terminated"}, log.read_text()[-3000:]
    calls = [("ec2", e["operation"]) for e in _events(log) if e.get("event") == "aws.call"]
    assert ("ec2", "TerminateInstances") in calls
    assert permissions.check_calls(calls, agent_policy_document(), principal="agent") == []


def test_agent_cannot_end_its_instance_without_the_agent_policy(
        aws: MotoServer, admin: boto3.session.Session, tmp_path: Path) -> None:
    iam = admin.client("iam")
    iam.create_role(RoleName="bare", Path="/spawn/",
                    AssumeRolePolicyDocument=json.dumps(TRUST_POLICY))
    iam.put_role_policy(RoleName="bare", PolicyName="tags-only", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:DescribeTags",
                                                 "Resource": "*"}]}))
    arn = iam.create_instance_profile(InstanceProfileName="bare", Path="/spawn/")
    iam.add_role_to_instance_profile(InstanceProfileName="bare", RoleName="bare")
    _, state, log = _run(aws, admin, arn["InstanceProfile"]["Arn"], tmp_path, enforce=True)
    assert state == "running", log.read_text()[-3000:]
    assert "AccessDenied" in log.read_text() or "Unauthorized" in log.read_text()
