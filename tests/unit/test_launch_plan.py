"""The pure launch plan: RunInstances parameters from validated flags and facts."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.launch import ami, launch_flags, plan
from spored import config as agent_config
from spored.errors import ValidationError

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
T3 = plan.InstanceTypeFacts("t3.micro", "x86_64", memory_mib=1024, vcpus=2,
                            hibernation_supported=True, gpu=False)
IMAGE = plan.ImageFacts("ami-0123456789abcdef0", "/dev/xvda", 8, "al2023")
FACTS = plan.LaunchFacts(region="us-east-1", type_facts=T3, image=IMAGE,
                         launched_by="arn:aws:iam::123456789012:user/alice", key_name="k",
                         security_group_ids=("sg-12345678",), subnet_id=None,
                         profile_arn="arn:aws:iam::123456789012:instance-profile/spawn/spawn-abc",
                         role_name="spawn-abc")


def lf(*argv: str, home: Path) -> launch_flags.LaunchFlags:
    parser = argparse.ArgumentParser()
    launch_flags.add_arguments(parser)
    return launch_flags.validate(parser.parse_args(["--instance-type", "t3.micro", *argv]), home=home)


def test_run_instances_parameters(tmp_path: Path) -> None:
    f = lf("--ttl", "3h", "--name", "train", "--count", "2", "--client-token", "tok-1", home=tmp_path)
    p = plan.build(f, FACTS, b"UD", NOW)
    params = p.run_instances
    assert params["MetadataOptions"] == {"HttpTokens": "required", "HttpEndpoint": "enabled",
                                         "HttpPutResponseHopLimit": 1, "InstanceMetadataTags": "enabled"}
    assert params["MinCount"] == params["MaxCount"] == 2
    assert params["ClientToken"] == "tok-1"
    assert params["IamInstanceProfile"] == {"Arn": FACTS.profile_arn}
    assert params["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert params["UserData"] == b"UD"
    specs = {s["ResourceType"]: {t["Key"]: t["Value"] for t in s["Tags"]}
             for s in params["TagSpecifications"]}
    assert specs["instance"] == specs["volume"] == {
        "spawn:managed": "true", "Name": "train", "spawn:on-complete": "terminate",
        "spawn:launched-by": "arn:aws:iam::123456789012:user/alice", "spawn:ttl": "3h",
        "spawn:expires-at": "2026-11-28T15:00:00Z", "spawn:role": "spawn-abc"}
    assert p.deadline == NOW + timedelta(hours=3)
    assert "InstanceMarketOptions" not in params and "HibernationOptions" not in params


def test_stop_lifecycle_keeps_stop_behaviour_and_has_the_ladder_and_a_failsafe(tmp_path: Path) -> None:
    f = lf("--on-complete", "stop", "--idle-timeout", "20m", home=tmp_path)
    p = plan.build(f, FACTS, b"", NOW)
    assert p.run_instances["InstanceInitiatedShutdownBehavior"] == "stop"
    cfg = agent_config.parse(p.config_toml)
    assert cfg.backstop is True and cfg.lifecycle.idle_timeout == timedelta(minutes=20)
    # no TTL: the "must be managed by" window, idle timeout + 30 minutes after launch
    assert p.failsafe_at == plan.failsafe_time(f, NOW) == NOW + timedelta(minutes=50)


@pytest.mark.parametrize(("action", "behaviour"), [("terminate", "terminate"), ("stop", "stop"),
                                                   ("hibernate", "stop")])
def test_shutdown_behaviour_follows_the_lifecycle(tmp_path: Path, action: str, behaviour: str) -> None:
    f = lf("--ttl", "1h", "--on-complete", action, home=tmp_path)
    assert plan.build(f, FACTS, b"", NOW).run_instances["InstanceInitiatedShutdownBehavior"] == behaviour


def test_terminate_lifecycle_has_backstop_and_fallback_copy(tmp_path: Path) -> None:
    f = lf("--ttl", "90m", home=tmp_path)
    p = plan.build(f, FACTS, b"", NOW)
    cfg = agent_config.parse(p.config_toml)
    assert cfg.backstop is True
    assert cfg.lifecycle.ttl == timedelta(minutes=90)
    assert cfg.lifecycle.expires_at == NOW + timedelta(minutes=90)
    assert p.failsafe_at == NOW + timedelta(minutes=90 + 30)


def test_only_no_timeout_has_no_failsafe(tmp_path: Path) -> None:
    assert plan.failsafe_time(lf("--no-timeout", home=tmp_path), NOW) is None


def test_spot_with_max_price(tmp_path: Path) -> None:
    f = lf("--spot", "--spot-max-price", "0.05", "--ttl", "1h", home=tmp_path)
    assert plan.build(f, FACTS, b"", NOW).run_instances["InstanceMarketOptions"] == {
        "MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time",
                                              "InstanceInterruptionBehavior": "terminate",
                                              "MaxPrice": "0.05"}}


def test_hibernation_encrypts_a_root_volume_big_enough_for_ram(tmp_path: Path) -> None:
    f = lf("--hibernate", "--on-complete", "hibernate", "--ttl", "1h", home=tmp_path)
    params = plan.build(f, FACTS, b"", NOW).run_instances
    assert params["HibernationOptions"] == {"Configured": True}
    assert params["BlockDeviceMappings"] == [{"DeviceName": "/dev/xvda", "Ebs": {
        "Encrypted": True, "VolumeType": "gp3", "DeleteOnTermination": True, "VolumeSize": 9}}]


def test_hibernation_refused_when_the_type_cannot(tmp_path: Path) -> None:
    g5 = plan.InstanceTypeFacts("g5.xlarge", "x86_64", 16384, 4, hibernation_supported=False, gpu=True)
    with pytest.raises(ValidationError) as err:
        plan.check_type(lf("--hibernate", home=tmp_path), g5)
    assert err.value.field == "--hibernate"


def test_default_name_is_derived_from_the_client_token(tmp_path: Path) -> None:
    f = lf("--client-token", "spawn-0123456789", home=tmp_path)
    assert plan.default_name(f) == "spawn-01234567"


def test_architecture_and_gpu_pick_the_ssm_parameter() -> None:
    def facts(arch: str, gpus: list[dict[str, object]] | None) -> plan.InstanceTypeFacts:
        desc: dict[str, object] = {"InstanceType": "x.large",
                                   "ProcessorInfo": {"SupportedArchitectures": ["i386", arch]},
                                   "MemoryInfo": {"SizeInMiB": 2048}}
        if gpus:
            desc["GpuInfo"] = {"Gpus": gpus}
        return ami.type_facts_from(desc)

    assert ami.ssm_parameter(facts("x86_64", None)) == \
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
    assert ami.ssm_parameter(facts("arm64", None)) == \
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"
    assert ami.ssm_parameter(facts("x86_64", [{"Name": "A10G"}])) == (
        "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id")
    assert ami.ssm_parameter(facts("arm64", [{"Name": "T4g"}])).startswith(
        "/aws/service/deeplearning/ami/arm64/")


def test_type_without_a_supported_architecture_is_refused() -> None:
    with pytest.raises(ValidationError):
        ami.type_facts_from({"InstanceType": "mac1.metal",
                             "ProcessorInfo": {"SupportedArchitectures": ["x86_64_mac"]}})
