"""The fault-injecting proxy in front of moto: errors, delays and black holes on chosen EC2 actions,
seen through boto3 the way the agent and the controller see them."""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest
from botocore import exceptions as bce
from botocore.config import Config

from controller.sandbox.faultproxy import FaultProxy, action_of
from spored.errors import ValidationError, aws_error_code, aws_error_kind

REGION = "us-east-1"


def client(proxy: FaultProxy, *, read_timeout: float = 60) -> Any:
    return boto3.client("ec2", region_name=REGION, endpoint_url=proxy.url,
                        config=Config(retries={"mode": "standard", "total_max_attempts": 1},
                                      connect_timeout=2, read_timeout=read_timeout))


def instance(ec2: Any) -> str:
    resp = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="t3.micro")
    return str(resp["Instances"][0]["InstanceId"])


def test_requests_without_a_rule_reach_moto_unchanged(proxy: FaultProxy) -> None:
    ec2 = client(proxy)
    iid = instance(ec2)
    ec2.create_tags(Resources=[iid], Tags=[{"Key": "k", "Value": "v"}])
    direct = boto3.client("ec2", region_name=REGION)  # AWS_ENDPOINT_URL: moto itself
    assert {t["Key"]: t["Value"] for t in direct.describe_tags(
        Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]} == {"k": "v"}
    assert ("RunInstances", "forwarded") in proxy.log and ("CreateTags", "forwarded") in proxy.log


def test_an_error_rule_gives_the_ec2_error_code_for_that_action_only(proxy: FaultProxy) -> None:
    ec2 = client(proxy)
    iid = instance(ec2)
    proxy.error("TerminateInstances", "RequestLimitExceeded", status=503, count=2)
    for _ in range(2):
        with pytest.raises(bce.ClientError) as err:
            ec2.terminate_instances(InstanceIds=[iid])
        assert aws_error_code(err.value) == "RequestLimitExceeded"
        assert aws_error_kind(err.value) == "unreachable"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])  # other actions pass
    assert ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"]  # count used up
    assert proxy.outcomes("TerminateInstances") == ["error 503 RequestLimitExceeded"] * 2 + ["forwarded"]


def test_a_500_internal_error(proxy: FaultProxy) -> None:
    ec2 = client(proxy)
    proxy.error("DescribeTags", "InternalError", status=500, message="An internal error has occurred")
    with pytest.raises(bce.ClientError) as err:
        ec2.describe_tags()
    assert aws_error_code(err.value) == "InternalError"
    assert "internal error" in err.value.response["Error"]["Message"]


def test_a_black_hole_is_a_read_timeout_with_no_response(proxy: FaultProxy) -> None:
    ec2 = client(proxy, read_timeout=1)
    proxy.blackhole("DescribeTags")
    started = time.monotonic()
    with pytest.raises(bce.ReadTimeoutError) as err:
        ec2.describe_tags()
    assert 0.9 <= time.monotonic() - started < 10
    assert err.value.response is None
    assert aws_error_kind(err.value) == "unreachable"
    proxy.clear()
    client(proxy).describe_tags()  # the rule is gone (a client with a generous timeout: moto is slow here)


def test_a_delay_rule_delays_and_then_forwards(proxy: FaultProxy) -> None:
    ec2 = client(proxy)
    proxy.delay("DescribeTags", 1.0, count=1)
    started = time.monotonic()
    ec2.describe_tags()
    assert time.monotonic() - started >= 1.0
    assert proxy.outcomes("DescribeTags") == ["delayed"]


def test_action_is_read_from_the_form_body_or_the_query() -> None:
    assert action_of("/", b"Action=TerminateInstances&Version=2016-11-15&InstanceId.1=i-1") == \
        "TerminateInstances"
    assert action_of("/?Action=DescribeTags&Version=2016-11-15", b"") == "DescribeTags"
    assert action_of("/", b"") == ""


def test_bad_rules_are_refused() -> None:
    proxy = FaultProxy("http://127.0.0.1:1")
    with pytest.raises(ValidationError, match="kind"):
        proxy.add("DescribeTags", "explode")
    with pytest.raises(ValidationError, match="status"):
        proxy.error("DescribeTags", status=200)
    with pytest.raises(ValidationError, match="upstream"):
        FaultProxy("ftp://example")
