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
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from controller.cli import main
from controller.iam.compose import TRUST_POLICY
from spored.contract import format_timestamp
from tests.conftest import MotoServer
from tests.integration.conftest import (
    REGION,
    Emulators,
    StartAgent,
    role_credentials_minted,
    timestamp,
    until,
)

BACKSTOP_AFTER = 3.0
EXTRA_CONFIG = f'warn_at = ["1s"]\nbackstop_after = "{int(BACKSTOP_AFTER)}s"\n'
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
        *, aws: MotoServer, admin: boto3.session.Session, emulator_for: Emulators, run_agent: StartAgent,
        console_outputs: dict[str, str], capsys: pytest.CaptureFixture[str], lifecycle: str) -> None:
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
    emulator = emulator_for(iid, session=admin)
    role_credentials_minted(emulator)  # sts:AssumeRole in the emulator, before enforcement
    aws.enforce_iam(True)

    agent = run_agent(emulator, EXTRA_CONFIG)
    requested = agent.wait_for("backstop.poweroff_requested", 90)
    assert (agent.dirs.runtime / "private" / "poweroff").exists()
    failed = agent.events("action.failed")[0]  # logged before the request it leads to
    assert failed["code"] == "UnauthorizedOperation"
    # Within the bound: not before backstop_after past the first denied call, and not forgotten.
    delay = (timestamp(requested) - max(deadline, timestamp(failed))).total_seconds()
    assert BACKSTOP_AFTER - 1 <= delay <= BACKSTOP_AFTER + 15, delay
    assert requested["shutdown_behaviour"] == ("terminate" if lifecycle == "terminate" else "stop")
    # The proof (before the power-off below ends the instance): DryRun denied both the end
    # call and CreateTags, on the console line (standard error) too.
    checked = agent.wait_for("permissions.checked", 60)
    assert checked["denied"] == [END_ACTION[lifecycle], "ec2:CreateTags"]
    line = f"spored: permissions denied: {END_ACTION[lifecycle]},ec2:CreateTags"
    until(lambda: line in agent.stderr_tail, 30, "the permission line on the console", agent)
    assert _power_off_as_ec2_does(ec2, iid) == requested["shutdown_behaviour"]
    state = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state in ENDED[lifecycle]
    agent.stop()
    emulator.stop()

    # spawn status --json: no status tag (CreateTags denied), the console output (what the
    # agent wrote on standard error, which the unit sends to the console) tells.
    console_outputs[iid] = "\n".join(agent.stderr_tail) + "\n"
    code = main(["status", iid, "--region", REGION, "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert code == 0
    assert shown["agent_permissions"] == {"verdict": "denied", "source": "console output",
                                          "actions": [END_ACTION[lifecycle], "ec2:CreateTags"]}
    assert shown["agent"].startswith(f"permissions denied: {END_ACTION[lifecycle]},ec2:CreateTags")
