"""A role without the end permissions, under moto's IAM enforcement: the fallback ladder ends the
instance anyway, and the user sees why.

The real agent (a subprocess; credentials only from the IMDS emulator) runs with a role that may
only read tags. At start it proves its permissions with DryRun calls and reports the denial on
its console line (standard error, which the unit sends to the system console); at the deadline
its EC2 call is denied, and ``backstop_after`` later it requests the OS power-off. The test plays
the OS and EC2's part of a power-off: when the request file appears, the instance does what its
``InstanceInitiatedShutdownBehavior`` says (stop or terminate), as EC2 does on a guest power-off.
``spawn status --json`` then shows the denial, read from the console output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from controller.cli import main
from controller.iam.compose import TRUST_POLICY
from controller.sandbox.imds_emulator import ImdsEmulator
from spored.contract import format_timestamp
from tests.conftest import MotoServer
from tests.integration.test_iam_agent_role import admin  # noqa: F401 - a fixture

REGION = "us-east-1"
BACKSTOP_AFTER = 3.0
CONFIG = f"""
tick = "1s"
spot_poll = "1s"
tag_refresh = "1s"
boot_grace = "1s"
wall = false
warn_at = ["1s"]
backstop_after = "{int(BACKSTOP_AFTER)}s"
"""
CHILD_DROPS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
               "AWS_EC2_METADATA_DISABLED", "AWS_REGION", "AWS_DEFAULT_REGION", "NOTIFY_SOCKET")
END_ACTION = {"terminate": "ec2:TerminateInstances", "stop": "ec2:StopInstances"}
ENDED = {"terminate": {"shutting-down", "terminated"}, "stop": {"stopping", "stopped"}}


def _tags_only_profile(session: boto3.session.Session) -> str:
    iam = session.client("iam")
    iam.create_role(RoleName="no-end", Path="/spawn/", AssumeRolePolicyDocument=json.dumps(TRUST_POLICY))
    iam.put_role_policy(RoleName="no-end", PolicyName="tags-only", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:DescribeTags",
                                                 "Resource": "*"}]}))
    arn = iam.create_instance_profile(InstanceProfileName="no-end", Path="/spawn/")["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName="no-end", RoleName="no-end")
    return str(arn)


def _events(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def _first(log: Path, event: str) -> dict[str, Any] | None:
    return next((e for e in _events(log) if e.get("event") == event), None)


def _at(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00"))


def _power_off_as_ec2_does(ec2: Any, iid: str) -> str:
    """What EC2 does when the guest powers off: the instance's shutdown behaviour."""
    attr = ec2.describe_instance_attribute(InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior")
    behaviour = str(attr["InstanceInitiatedShutdownBehavior"]["Value"])
    if behaviour == "terminate":
        ec2.terminate_instances(InstanceIds=[iid])
    else:
        ec2.stop_instances(InstanceIds=[iid])
    return behaviour


@pytest.mark.usefixtures("ec2_denials_like_aws")
@pytest.mark.parametrize("lifecycle", ["stop", "terminate"])
def test_a_denied_end_call_ends_the_instance_through_the_power_off_fallback(
        *, aws: MotoServer, admin: boto3.session.Session, tmp_path: Path,  # noqa: F811 - the fixture
        console_outputs: dict[str, str], capsys: pytest.CaptureFixture[str], lifecycle: str) -> None:
    import requests

    ec2 = admin.client("ec2")
    deadline = (datetime.now(UTC) + timedelta(seconds=12)).replace(microsecond=0)
    iid = str(ec2.run_instances(
        ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="t3.micro",
        IamInstanceProfile={"Arn": _tags_only_profile(admin)},
        InstanceInitiatedShutdownBehavior="terminate" if lifecycle == "terminate" else "stop",
        MetadataOptions={"HttpTokens": "required", "InstanceMetadataTags": "enabled"},
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": "spawn:managed", "Value": "true"}, {"Key": "spawn:on-complete", "Value": lifecycle},
            {"Key": "spawn:expires-at", "Value": format_timestamp(deadline)}]}],
    )["Instances"][0]["InstanceId"])
    emulator = ImdsEmulator(iid, REGION, aws.url, session=admin).start()
    # The role's credentials are minted (sts:AssumeRole in the emulator) before enforcement.
    token = requests.put(f"{emulator.url}/latest/api/token", timeout=5,
                         headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"}).text
    base = f"{emulator.url}/latest/meta-data/iam/security-credentials/"
    role = requests.get(base, headers={"X-aws-ec2-metadata-token": token}, timeout=10).text.strip()
    assert requests.get(base + role, headers={"X-aws-ec2-metadata-token": token},
                        timeout=10).json()["Code"] == "Success"
    aws.enforce_iam(True)

    (tmp_path / "spored.d").mkdir()
    (tmp_path / "run").mkdir(mode=0o750)
    config = tmp_path / "spored.toml"
    config.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if k not in CHILD_DROPS}
    env.update({"AWS_ENDPOINT_URL": aws.url, "AWS_EC2_METADATA_SERVICE_ENDPOINT": emulator.url,
                "STATE_DIRECTORY": str(tmp_path / "state"), "RUNTIME_DIRECTORY": str(tmp_path / "run"),
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull})
    log = tmp_path / "agent.log"  # stdout (journal) and stderr (journal + console), as on the unit
    request = tmp_path / "run" / "private" / "poweroff"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "spored.cli", "--config", str(config), "run"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 90
        while time.monotonic() < end and not request.exists() and proc.poll() is None:
            time.sleep(0.2)
        assert request.exists(), log.read_text()[-4000:]
        requested = _first(log, "backstop.poweroff_requested")
        failed = _first(log, "action.failed")
        assert requested is not None and failed is not None, log.read_text()[-4000:]
        assert failed["code"] == "UnauthorizedOperation"
        # Within the bound: not before backstop_after past the first denied call, soon after it.
        delay = (_at(requested) - max(deadline, _at(failed))).total_seconds()
        assert BACKSTOP_AFTER - 1 <= delay <= BACKSTOP_AFTER + 15, delay
        assert requested["shutdown_behaviour"] == ("terminate" if lifecycle == "terminate" else "stop")
        # The proof (before the power-off below ends the instance): DryRun denied both the end
        # call and CreateTags, on the console line too.
        end = time.monotonic() + 60
        while (checked := _first(log, "permissions.checked")) is None and time.monotonic() < end:
            time.sleep(0.2)
        assert checked is not None, log.read_text()[-4000:]
        assert checked["denied"] == [END_ACTION[lifecycle], "ec2:CreateTags"]
        line = f"spored: permissions denied: {END_ACTION[lifecycle]},ec2:CreateTags"
        assert line in log.read_text().splitlines()
        assert _power_off_as_ec2_does(ec2, iid) == requested["shutdown_behaviour"]
        state = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
        assert state in ENDED[lifecycle]
    finally:
        proc.kill()
        proc.wait(timeout=10)
        emulator.stop()

    # spawn status --json: no status tag (CreateTags denied), the console output tells.
    console_outputs[iid] = log.read_text()
    code = main(["status", iid, "--region", REGION, "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert code == 0
    assert shown["agent_permissions"] == {"verdict": "denied", "source": "console output",
                                          "actions": [END_ACTION[lifecycle], "ec2:CreateTags"]}
    assert shown["agent"].startswith(f"permissions denied: {END_ACTION[lifecycle]},ec2:CreateTags")
