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
from datetime import UTC, datetime, timedelta

import boto3

from controller import aws as controller_aws
from controller import permissions
from controller.iam import agent_policy_document, plan, provision
from controller.iam.compose import TRUST_POLICY, IamRequest
from controller.sandbox.agent import AgentProcess
from spored.contract import format_timestamp
from tests.conftest import MotoServer
from tests.integration.conftest import Emulators, StartAgent, evaluated_after, role_credentials_minted

WARN_AT = 'warn_at = ["1s"]\n'


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


def _run(aws: MotoServer, emulator_for: Emulators, run_agent: StartAgent, session: boto3.session.Session,
         profile_arn: str, *, enforce: bool) -> tuple[str, datetime, AgentProcess]:
    """Launch with a deadline 8 s away, mint the role's credentials through the emulator (before
    any enforcement), optionally switch enforcement on, and start the agent.
    Returns (instance id, deadline, agent)."""
    deadline = (datetime.now(UTC) + timedelta(seconds=8)).replace(microsecond=0)
    iid = _launch(session, profile_arn, deadline)
    emulator = emulator_for(iid, session=session)
    role_credentials_minted(emulator)
    if enforce:
        aws.enforce_iam(True)
    return iid, deadline, run_agent(emulator, WARN_AT)


def test_agent_ends_its_instance_with_the_default_spawn_role(
        aws: MotoServer, admin: boto3.session.Session, emulator_for: Emulators,
        run_agent: StartAgent) -> None:
    provisioned = provision(plan(IamRequest()))
    inline = controller_aws.client("iam").list_role_policies(RoleName=provisioned.role_name)
    assert inline["PolicyNames"] == ["spawn-agent"]
    iid, _, agent = _run(aws, emulator_for, run_agent, admin, provisioned.profile_arn, enforce=False)
    agent.wait_for("action.done", 40)
    assert _state(admin, iid) in {"shutting-down", "terminated"}, agent.log_tail()
    calls = [("ec2", e["operation"]) for e in agent.events("aws.call")]
    assert ("ec2", "TerminateInstances") in calls
    assert permissions.check_calls(calls, agent_policy_document(), principal="agent") == []


def test_agent_cannot_end_its_instance_without_the_agent_policy(
        aws: MotoServer, admin: boto3.session.Session, emulator_for: Emulators,
        run_agent: StartAgent) -> None:
    iam = admin.client("iam")
    iam.create_role(RoleName="bare", Path="/spawn/",
                    AssumeRolePolicyDocument=json.dumps(TRUST_POLICY))
    iam.put_role_policy(RoleName="bare", PolicyName="tags-only", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:DescribeTags",
                                                 "Resource": "*"}]}))
    arn = iam.create_instance_profile(InstanceProfileName="bare", Path="/spawn/")
    iam.add_role_to_instance_profile(InstanceProfileName="bare", RoleName="bare")
    iid, deadline, agent = _run(aws, emulator_for, run_agent, admin, arn["InstanceProfile"]["Arn"],
                                enforce=True)
    failed = agent.wait_for("action.failed", 40)  # the end call at the deadline, denied
    assert failed["code"] in {"AccessDenied", "UnauthorizedOperation"}, failed
    evaluated_after(agent, deadline + timedelta(seconds=2))
    assert _state(admin, iid) == "running", agent.log_tail()
    assert not agent.events("action.done")
