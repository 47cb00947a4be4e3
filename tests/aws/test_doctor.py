"""`spawn doctor` against the moto server: a healthy setup, broken ones, and what it cannot know.

moto cannot answer iam:SimulatePrincipalPolicy (HTTP 500) and ignores ExpectedBucketOwner: the
checks that depend on them must say "could not check", never ok. One moto state serves the module
(a reset re-initializes moto's region data, seconds per test); each test that breaks something
does so in a region of its own or undoes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from controller import aws as controller_aws
from controller import permissions
from controller.cli import main
from controller.iam.cli_policy import policy
from controller.launch import keys
from spored.errors import ExitStatus
from tests.aws.iam_users import become, iam_user
from tests.conftest import MotoServer

REGION = "us-east-1"


# one moto state for the module (a module-scoped fixture): its tests stay on one xdist worker
pytestmark = [pytest.mark.shared_moto, pytest.mark.xdist_group("test_doctor")]


def _public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME with an ed25519 key pair in ~/.ssh, as a user who ran ssh-keygen has."""
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True)
    (h / ".ssh" / "id_ed25519.pub").write_text(_public_key() + " me@laptop\n")
    (h / ".ssh" / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n(test)\n")
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.delenv("SPAWN_AGENT_BUNDLE", raising=False)
    return h


def doctor(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["doctor", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def by_name(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in result["checks"]}


def line(out: str, name: str) -> str:
    (found,) = [ln for ln in out.splitlines() if f"  {name}  " in ln]
    return found


def inventory(region: str = REGION) -> dict[str, Any]:
    ec2 = boto3.client("ec2", region_name=region)
    return {
        "instances": [i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
                      for i in r["Instances"]],
        "groups": sorted(g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]),
        "keys": sorted(k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]),
        "buckets": sorted(b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]),
    }


@pytest.mark.usefixtures("aws", "home")
def test_healthy_setup_passes_and_writes_nothing(capsys: pytest.CaptureFixture[str],
                                                 recorded: list[tuple[str, str]]) -> None:
    before = inventory()
    code, out, err = doctor(capsys, "--region", REGION, "--ssh-from", "203.0.113.7/32")
    assert code == ExitStatus.OK, out + err
    assert line(out, "credentials").startswith("ok ")
    assert "arn:aws:sts::123456789012:user/moto (account 123456789012" in line(out, "credentials")
    assert line(out, "region").startswith("ok ") and "us-east-1 (from --region), enabled" in out
    assert line(out, "network").startswith("ok ") and "default VPC vpc-" in line(out, "network")
    assert "x86_64 ami-" in line(out, "ami") and "arm64 ami-" in line(out, "ami")
    assert "the first launch imports it as spawn-ed25519-" in line(out, "ssh-key")
    assert line(out, "ssh-from").startswith("ok ") and "203.0.113.7/32" in line(out, "ssh-from")
    # moto cannot answer the policy simulator: the IAM and S3 actions stay unchecked, honestly.
    permissions_line = line(out, "permissions")
    assert permissions_line.startswith("could not check ")
    assert "not checked: " in permissions_line and "iam:CreateRole" not in permissions_line.split(
        "not checked: ")[0]
    assert line(out, "bundle-bucket").startswith("ok ") and "does not exist yet" in out
    assert "no check found anything that blocks a launch" in err
    assert inventory() == before  # reads and DryRuns only
    # Every call doctor made is declared, and the minimal CLI policy grants it.
    assert recorded
    assert permissions.check_calls(recorded, policy("minimal")) == []
    assert {op for _, op in recorded} >= {"GetCallerIdentity", "DescribeRegions", "RunInstances",
                                          "CreateSecurityGroup", "ImportKeyPair", "HeadBucket"}


@pytest.mark.usefixtures("aws", "home")
def test_json_is_one_object_of_the_documented_shape(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = doctor(capsys, "--region", REGION, "--json", "--ssh-from", "0.0.0.0/0")
    result = json.loads(out)  # one object: the whole of stdout
    assert set(result) == {"checks", "ok"} and result["ok"] is True and code == ExitStatus.OK
    assert [c["name"] for c in result["checks"]] == [
        "credentials", "region", "network", "ami", "ssh-key", "ssh-from", "permissions", "bundle-bucket"]
    for check in result["checks"]:
        assert set(check) == {"name", "status", "detail", "fix"}
        assert check["status"] in {"ok", "warn", "fail", "could-not-check"}
    checks = by_name(result)
    assert checks["ssh-from"]["status"] == "warn"  # SSH open to the world, as asked: warned
    assert checks["ssh-from"]["fix"].startswith("pass --ssh-from YOUR_ADDRESS/32")
    assert checks["permissions"]["status"] == "could-not-check"


@pytest.mark.usefixtures("aws", "home")
def test_no_default_vpc_fails_with_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    region = "eu-west-3"
    ec2 = boto3.client("ec2", region_name=region)
    (vpc,) = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    for subnet in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]:
        ec2.delete_subnet(SubnetId=subnet["SubnetId"])
    for gw in ec2.describe_internet_gateways(
            Filters=[{"Name": "attachment.vpc-id", "Values": [vpc["VpcId"]]}])["InternetGateways"]:
        ec2.detach_internet_gateway(InternetGatewayId=gw["InternetGatewayId"], VpcId=vpc["VpcId"])
        ec2.delete_internet_gateway(InternetGatewayId=gw["InternetGatewayId"])
    ec2.delete_vpc(VpcId=vpc["VpcId"])

    code, out, err = doctor(capsys, "--region", region)
    assert code == ExitStatus.PREFLIGHT
    assert line(out, "network") == (
        f"FAIL             network        no default VPC in {region} -> fix: "
        f"`aws ec2 create-default-vpc --region {region}`, or pass --subnet subnet-...")
    assert "a launch would fail" in err
    code, out, _ = doctor(capsys, "--region", region, "--json")
    network = by_name(json.loads(out))["network"]
    assert (network["status"], code) == ("fail", ExitStatus.PREFLIGHT)
    # The launch's RunInstances DryRun still ran without a VPC; CreateSecurityGroup could not.
    assert "ec2:CreateSecurityGroup" in by_name(json.loads(out))["permissions"]["detail"]


# AWS authorizes HeadBucket as s3:ListBucket (S3 API Reference, HeadBucket: "you must have
# permissions to perform the s3:ListBucket action"); moto checks a made-up s3:HeadBucket instead.
MOTO_HEAD_BUCKET = {"Sid": "MotoHeadBucket", "Effect": "Allow", "Action": ["s3:HeadBucket"],
                    "Resource": "*"}


def _for_moto(document: dict[str, Any], *without: str) -> dict[str, Any]:
    """``document`` without some actions, plus moto's name for HeadBucket unless s3:ListBucket is
    one of those removed."""
    out: dict[str, Any] = json.loads(json.dumps(document))
    for stmt in out["Statement"]:
        stmt["Action"] = [a for a in stmt["Action"] if a not in without]
    if "s3:ListBucket" not in without:
        out["Statement"].append(MOTO_HEAD_BUCKET)
    return out


@pytest.mark.usefixtures("home")
def test_denied_permissions_fail_by_dry_run(aws: MotoServer, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    creds = iam_user(_for_moto(policy("minimal"), "ec2:RunInstances", "s3:ListBucket"), "no-run")
    become(monkeypatch, creds, enforcing=aws)
    code, out, _ = doctor(capsys, "--region", REGION, "--json")
    checks = by_name(json.loads(out))
    assert code == ExitStatus.PREFLIGHT
    assert checks["credentials"]["detail"].startswith("arn:aws:iam::123456789012:user/no-run")
    perms = checks["permissions"]
    assert perms["status"] == "fail"
    assert perms["detail"].startswith("denied: ec2:RunInstances (DryRun RunInstances: AccessDenied")
    assert "cli-policy" in perms["fix"]
    bucket = checks["bundle-bucket"]
    assert bucket["status"] == "fail" and "s3:ListBucket" in bucket["detail"]
    for name in ("region", "network", "ami", "ssh-key"):
        assert checks[name]["status"] == "ok", checks[name]


@pytest.mark.usefixtures("home")
def test_the_minimal_policy_is_enough_for_doctor_itself(
        aws: MotoServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    become(monkeypatch, iam_user(_for_moto(policy("minimal")), "minimal-user"), enforcing=aws)
    code, out, _ = doctor(capsys, "--region", REGION, "--json", "--ssh-from", "203.0.113.7/32")
    checks = by_name(json.loads(out))
    assert code == ExitStatus.OK, checks
    perms = checks["permissions"]
    # The simulator is allowed by the policy but moto does not implement it: could not check.
    assert perms["status"] == "could-not-check"
    assert "iam:SimulatePrincipalPolicy" in perms["detail"]


@pytest.mark.usefixtures("aws", "home")
def test_bad_ssh_key_path_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.pub"
    code, out, _ = doctor(capsys, "--region", REGION, "--ssh-key", str(missing))
    assert code == ExitStatus.PREFLIGHT
    assert line(out, "ssh-key").startswith(
        f"FAIL             ssh-key        --ssh-key: cannot read '{missing}'")
    not_a_key = tmp_path / "id.pub"
    not_a_key.write_text("hello\n")
    code, out, _ = doctor(capsys, "--region", REGION, "--ssh-key", str(not_a_key), "--json")
    ssh = by_name(json.loads(out))["ssh-key"]
    assert (code, ssh["status"]) == (ExitStatus.PREFLIGHT, "fail")
    assert "is not an OpenSSH public key" in ssh["detail"] and "ssh-keygen" in ssh["fix"]


@pytest.mark.usefixtures("aws")
def test_key_pair_under_spawns_name_with_another_key_fails(capsys: pytest.CaptureFixture[str],
                                                           home: Path) -> None:
    mine = (home / ".ssh" / "id_ed25519.pub").read_text().strip()
    name = keys.key_pair_name(mine)
    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.import_key_pair(KeyName=name, PublicKeyMaterial=_public_key().encode())
    try:
        code, out, _ = doctor(capsys, "--region", REGION, "--json")
        ssh = by_name(json.loads(out))["ssh-key"]
        assert (code, ssh["status"]) == (ExitStatus.PREFLIGHT, "fail")
        assert f"key pair {name} exists in {REGION} with a different key" in ssh["detail"]
        assert f"aws ec2 delete-key-pair --key-name {name}" in ssh["fix"]
    finally:
        ec2.delete_key_pair(KeyName=name)
    ec2.import_key_pair(KeyName="mine-already", PublicKeyMaterial=mine.encode())
    try:
        code, out, _ = doctor(capsys, "--region", REGION, "--json", "--ssh-from", "203.0.113.7/32")
        assert by_name(json.loads(out))["ssh-key"]["detail"].endswith("matches key pair mine-already")
        assert code == ExitStatus.OK
    finally:
        ec2.delete_key_pair(KeyName="mine-already")


@pytest.mark.usefixtures("aws", "home")
def test_existing_bucket_ownership_is_unproven_where_the_owner_condition_is_ignored(
        capsys: pytest.CaptureFixture[str]) -> None:
    bucket = f"spawn-agent-123456789012-{REGION}"
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=bucket)
    try:
        code, out, _ = doctor(capsys, "--region", REGION, "--json", "--ssh-from", "203.0.113.7/32")
    finally:
        s3.delete_bucket(Bucket=bucket)
    found = by_name(json.loads(out))["bundle-bucket"]
    assert found["status"] == "could-not-check" and code == ExitStatus.OK
    assert found["detail"] == (f"{bucket} exists, but this S3 endpoint ignores ExpectedBucketOwner, "
                               "so its owner is unproven")


@pytest.mark.usefixtures("aws", "home")
def test_opt_in_region_not_enabled_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = doctor(capsys, "--region", "ap-east-1")
    assert code == ExitStatus.PREFLIGHT
    assert "ap-east-1 (from --region) is an opt-in region that this account has not enabled" \
        in line(out, "region")
    for name in ("network", "ami", "permissions", "bundle-bucket"):
        assert line(out, name).endswith("needs credentials and an enabled region (see above)")


@pytest.mark.usefixtures("aws", "home")
def test_no_credentials_fail_and_nothing_else_is_guessed(capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var)
    controller_aws.session.cache_clear()
    code, out, _ = doctor(capsys, "--json")
    checks = by_name(json.loads(out))
    assert code == ExitStatus.PREFLIGHT
    assert checks["credentials"]["status"] == "fail" and "aws configure" in checks["credentials"]["fix"]
    assert checks["region"]["detail"] == "us-east-1 (from AWS_DEFAULT_REGION); whether it is enabled " \
                                         "needs credentials"
    for name in ("region", "network", "ami", "permissions", "bundle-bucket"):
        assert checks[name]["status"] == "could-not-check", checks[name]


@pytest.mark.parametrize(("argv", "flag"), [(["--region", "mars"], "--region"),
                                            (["--ssh-from", "10.0.0.1/8"], "--ssh-from"),
                                            (["--subnet", "net-1"], "--subnet")])
def test_bad_flags_exit_2_before_any_call(argv: list[str], flag: str, capsys: pytest.CaptureFixture[str],
                                          recorded: list[tuple[str, str]]) -> None:
    code, _, err = doctor(capsys, *argv)
    assert code == ExitStatus.USAGE
    assert f"error: {flag}: " in err
    assert recorded == []


@pytest.mark.usefixtures("aws", "home")
def test_the_defaults_file_fills_what_launch_would_take_from_it(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config"
    (config / "spawn").mkdir(parents=True)
    (config / "spawn" / "config.toml").write_text('region = "us-east-1"\nssh-from = "203.0.113.9/32"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    controller_aws.session.cache_clear()
    code, out, _ = doctor(capsys)
    assert code == ExitStatus.OK, out
    assert f"us-east-1 (from the defaults file {config}/spawn/config.toml), enabled" in line(out, "region")
    assert line(out, "ssh-from").startswith("ok ") and "203.0.113.9/32" in line(out, "ssh-from")

    (config / "spawn" / "config.toml").write_text('region = "mars"\n')
    code, _, err = doctor(capsys)
    assert code == ExitStatus.USAGE
    assert f"{config}/spawn/config.toml: region" in err


@pytest.mark.usefixtures("aws", "home")
def test_without_ssh_from_the_callers_address_is_looked_up_as_launch_does(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # tests/conftest.py points SPAWN_CHECKIP_URL at a loopback port that refuses: launch would stop
    code, out, _ = doctor(capsys, "--region", REGION, "--json")
    failed = by_name(json.loads(out))["ssh-from"]
    assert failed["status"] == "fail" and code == ExitStatus.PREFLIGHT
    assert "could not look up your public IPv4 address" in failed["detail"]
    assert failed["fix"] == "pass --ssh-from YOUR_ADDRESS/32"
    from tests.aws.test_launch_run import checkip_answering

    with checkip_answering("198.51.100.23\n") as url:
        monkeypatch.setenv("SPAWN_CHECKIP_URL", url)
        code, out, _ = doctor(capsys, "--region", REGION, "--json")
    found = by_name(json.loads(out))["ssh-from"]
    assert found["status"] == "ok" and "198.51.100.23/32" in found["detail"]
