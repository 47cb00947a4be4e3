"""The agent's EC2 adapter recovers when credentials were not available at its first call."""

from __future__ import annotations

import os

import boto3
import pytest

from spored.ec2 import Ec2, Ec2CallError
from tests.conftest import MotoServer


def test_a_call_made_before_credentials_exist_does_not_poison_later_calls(
        aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                                 TagSpecifications=[{"ResourceType": "instance",
                                                     "Tags": [{"Key": "spawn:managed", "Value": "true"}]}]
                                 )["Instances"][0]["InstanceId"]

    # At boot: no static keys and no instance credentials yet.
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    saved = {k: os.environ[k] for k in keys if k in os.environ}
    for key in saved:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    agent = Ec2("us-east-1")
    with pytest.raises(Ec2CallError) as info:
        agent.describe_tags(instance)
    assert info.value.code == "NoCredentialsError"

    # Credentials become available: the very next call uses them.
    for key, value in saved.items():
        monkeypatch.setenv(key, value)
    assert agent.describe_tags(instance) == {"spawn:managed": "true"}
