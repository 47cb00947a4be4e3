"""Smoke test: boto3 on an "instance" finds its role's credentials through the IMDSv2 emulator.

No keys in the environment, only AWS_EC2_METADATA_SERVICE_ENDPOINT: boto3's own credential chain
gets a token, lists the role, fetches its credentials and signs calls that moto, with IAM
enforcement on, checks against the role's policy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from controller.sandbox.imds_emulator import TOKEN_HEADER, TOKEN_PATH, TTL_HEADER, ImdsEmulator
from spored.errors import ExitStatus, PermissionDenied, from_aws
from tests.conftest import MotoServer

REGION = "us-east-1"
TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
DESCRIBE_ONLY = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Action": ["ec2:Describe*"], "Resource": "*"}]}
EVERYTHING = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


@dataclass
class OnInstance:
    instance_id: str
    emulator: ImdsEmulator


@pytest.fixture
def on_instance(aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[OnInstance]:
    iam = boto3.client("iam")
    # The emulator plays AWS's side, which needs its own (admin) identity once enforcement is on.
    iam.create_user(UserName="imds-emulator")
    iam.put_user_policy(UserName="imds-emulator", PolicyName="all", PolicyDocument=json.dumps(EVERYTHING))
    key = iam.create_access_key(UserName="imds-emulator")["AccessKey"]
    admin = boto3.session.Session(aws_access_key_id=key["AccessKeyId"],
                                  aws_secret_access_key=key["SecretAccessKey"], region_name=REGION)
    iam.create_role(RoleName="smoke-role", AssumeRolePolicyDocument=json.dumps(TRUST))
    iam.put_role_policy(RoleName="smoke-role", PolicyName="describe",
                        PolicyDocument=json.dumps(DESCRIBE_ONLY))
    iam.create_instance_profile(InstanceProfileName="smoke-profile")
    iam.add_role_to_instance_profile(InstanceProfileName="smoke-profile", RoleName="smoke-role")
    instance_id = boto3.client("ec2", region_name=REGION).run_instances(
        ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="t3.micro",
        IamInstanceProfile={"Name": "smoke-profile"})["Instances"][0]["InstanceId"]
    with ImdsEmulator(instance_id, REGION, aws.url, session=admin) as emu:
        # On AWS the EC2 service assumes the role, outside the caller's IAM. moto 5.2 instead
        # fails (HTTP 500) to evaluate a Service-principal trust policy once enforcement is on,
        # so the emulator takes its (cached, 1 h) AssumeRole credentials before switching it on.
        tok = requests.put(f"{emu.url}{TOKEN_PATH}", headers={TTL_HEADER: "60"}, timeout=10).text
        warm = requests.get(f"{emu.url}/latest/meta-data/iam/security-credentials/smoke-role",
                            headers={TOKEN_HEADER: tok}, timeout=10)
        assert warm.status_code == 200
        emu.log.clear()
        aws.enforce_iam(True)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                     "AWS_EC2_METADATA_DISABLED", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", emu.url)
        # botocore's default is 1 s and 1 attempt; this shared machine is sometimes slower than that.
        monkeypatch.setenv("AWS_METADATA_SERVICE_TIMEOUT", "5")
        monkeypatch.setenv("AWS_METADATA_SERVICE_NUM_ATTEMPTS", "2")
        yield OnInstance(instance_id, emu)


def instance_session() -> Any:
    return boto3.session.Session(region_name=REGION)


def test_boto3_signs_with_the_instance_role_from_imds(on_instance: OnInstance) -> None:
    session = instance_session()
    creds = session.get_credentials()
    assert creds is not None and creds.method == "iam-role"
    assert creds.access_key != "testing"
    found = session.client("ec2").describe_instances(InstanceIds=[on_instance.instance_id])
    assert found["Reservations"][0]["Instances"][0]["InstanceId"] == on_instance.instance_id
    log = on_instance.emulator.log
    assert log.count(method="PUT", path=TOKEN_PATH, status=200) >= 1
    assert log.count(path="/latest/meta-data/iam/security-credentials/smoke-role", status=200) >= 1
    assert log.count(status=401) == 0


def test_calls_outside_the_role_policy_are_denied(on_instance: OnInstance) -> None:
    session = instance_session()
    with pytest.raises(ClientError) as denied:
        session.client("ec2").terminate_instances(InstanceIds=[on_instance.instance_id])
    assert denied.value.response["Error"]["Code"] in {"AccessDenied", "UnauthorizedOperation"}
    error = from_aws(denied.value, action=f"terminating {on_instance.instance_id}")
    assert isinstance(error, PermissionDenied) and error.exit_status is ExitStatus.CREDENTIALS
    with pytest.raises(ClientError) as iam_denied:
        session.client("iam").list_roles()
    assert iam_denied.value.response["Error"]["Code"] in {"AccessDenied", "AccessDeniedException"}
    # Still alive: the denied call changed nothing.
    state = session.client("ec2").describe_instances(InstanceIds=[on_instance.instance_id])
    assert state["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"


def test_without_the_metadata_service_there_are_no_credentials(
        on_instance: OnInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    on_instance.emulator.stop()
    monkeypatch.setenv("AWS_METADATA_SERVICE_TIMEOUT", "1")
    monkeypatch.setenv("AWS_METADATA_SERVICE_NUM_ATTEMPTS", "1")
    assert instance_session().get_credentials() is None



def test_botocores_region_fetcher_reads_the_placement(on_instance: OnInstance) -> None:
    """botocore's own IMDS region client (used for its "auto" defaults mode) asks
    ``placement/availability-zone/`` with a trailing slash and trims the zone letter."""
    from botocore.utils import InstanceMetadataRegionFetcher

    fetcher = InstanceMetadataRegionFetcher(timeout=5, num_attempts=2, base_url=on_instance.emulator.url)
    assert fetcher.retrieve_region() == REGION
    assert on_instance.emulator.log.count(path="/latest/meta-data/placement/availability-zone/",
                                          status=200) == 1
