"""Names that can't be hijacked: someone who shares the account (or, for the bucket, any other
account) creates spawn's predictable key pair, security group or bucket name first. spawn must
never use what they made: a key pair or group it did not make stops the launch with exit 2 before
anything is created; a bucket name owned by another account makes spawn use a name of its own."""

from __future__ import annotations

import base64
import email
import gzip
import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from controller.cli import main
from controller.launch import keys, netsec
from spored.errors import ValidationError
from tests.conftest import MotoServer

# one moto state for the module (the ``cloud`` fixture): its tests stay on one xdist worker
pytestmark = pytest.mark.xdist_group("test_launch_squatting")

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account: the victim's
OTHER_ACCOUNT = "333344445555"
CIDR = "203.0.113.7/32"
WRITES = ("Create", "Put", "Run", "Import", "Authorize", "Delete", "Terminate", "Attach", "Add", "Upload",
          "Tag")


def ed25519_public_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    raw = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                                 serialization.PublicFormat.OpenSSH)
    return raw.decode()


@pytest.fixture
def aws(cloud: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MotoServer:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SPAWN_AGENT_BUNDLE", raising=False)
    return cloud



@pytest.fixture
def victim_key(tmp_path: Path) -> tuple[Path, str]:
    text = ed25519_public_key()
    path = tmp_path / "victim.pub"
    path.write_text(text + " victim@laptop\n")
    return path, text


def ec2() -> Any:
    return boto3.client("ec2", region_name=REGION)


def default_vpc() -> str:
    return str(ec2().describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"])


def spawn(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def launch(capsys: pytest.CaptureFixture[str], bundle: Path, *extra: str) -> tuple[int, str, str]:
    return spawn(capsys, "launch", "-t", "t3.micro", "--ttl", "1h", "--agent-bundle", str(bundle),
                 "--no-wait", "--json", "--region", REGION, *extra)


def writes(recorded: list[tuple[str, str]]) -> list[str]:
    return [op for _svc, op in recorded if op.startswith(WRITES)]


# ------------------------------------------------------------------------------------ key pairs
@pytest.mark.usefixtures("aws")
def test_a_squatted_key_pair_name_stops_the_launch_before_anything_is_created(
        capsys: pytest.CaptureFixture[str], bundle: Path, victim_key: tuple[Path, str],
        recorded: list[tuple[str, str]]) -> None:
    path, victim = victim_key
    name = keys.key_pair_name(victim)  # predictable from the victim's public key alone
    ec2().import_key_pair(KeyName=name, PublicKeyMaterial=ed25519_public_key().encode())  # the attacker's key
    recorded.clear()
    code, out, err = launch(capsys, bundle, "--ssh-key", str(path), "--ssh-from", CIDR)
    assert code == 2, out + err
    assert f"key pair {name}" in err and "holds another public key" in err
    assert writes(recorded) == []
    assert not [r for r in ec2().describe_instances()["Reservations"]
                if any(i.get("KeyName") == name for i in r["Instances"])]


@pytest.mark.usefixtures("aws")
def test_import_never_takes_a_duplicate_for_success_without_checking(victim_key: tuple[Path, str]) -> None:
    """The race: the name is taken between the launch's check and its ImportKeyPair."""
    _path, victim = victim_key
    name = keys.key_pair_name(victim)
    ec2().import_key_pair(KeyName=name, PublicKeyMaterial=ed25519_public_key().encode())
    with pytest.raises(ValidationError, match="holds another public key"):
        keys.import_key_pair(ec2(), victim)
    ec2().delete_key_pair(KeyName=name)
    ec2().import_key_pair(KeyName=name, PublicKeyMaterial=victim.encode())  # a concurrent launch's
    assert keys.import_key_pair(ec2(), victim) == (name, False)


@pytest.mark.usefixtures("aws")
def test_the_users_own_key_is_reused_under_any_name(capsys: pytest.CaptureFixture[str], bundle: Path,
                                                    victim_key: tuple[Path, str]) -> None:
    path, victim = victim_key
    ec2().import_key_pair(KeyName="my-laptop", PublicKeyMaterial=(victim + " me").encode())
    code, out, err = launch(capsys, bundle, "--ssh-key", str(path), "--ssh-from", CIDR)
    assert code == 0, err
    iid = json.loads(out)["instances"][0]["instance_id"]
    inst = ec2().describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert inst["KeyName"] == "my-laptop"


# ------------------------------------------------------------------------------ security groups
def squat_group(cidrs: tuple[str, ...], permissions: list[dict[str, Any]], *, tagged: bool) -> str:
    name = netsec.group_name(cidrs)
    tags = [{"ResourceType": "security-group", "Tags": [{"Key": "spawn:managed", "Value": "true"},
                                                        {"Key": "Name", "Value": name}]}] if tagged else []
    group_id = str(ec2().create_security_group(GroupName=name, Description="looks like spawn's",
                                               VpcId=default_vpc(), TagSpecifications=tags)["GroupId"])
    if permissions:
        ec2().authorize_security_group_ingress(GroupId=group_id, IpPermissions=permissions)
    return group_id


ALL_OPEN = [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]


GROUP_CIDR = "203.0.113.8/32"  # a rule set no other test here launches with
SQUATS = {
    "all-ports-open": (netsec.ingress_permissions((GROUP_CIDR,)) + ALL_OPEN, True,
                       "admits more than spawn would"),
    "ssh-from-everyone": ([{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                            "IpRanges": [{"CidrIp": GROUP_CIDR}, {"CidrIp": "0.0.0.0/0"}]}], True,
                          "from 0.0.0.0/0"),
    "untagged": (netsec.ingress_permissions((GROUP_CIDR,)), False, "lacks spawn's tags"),
}


@pytest.mark.usefixtures("aws")
@pytest.mark.parametrize("squat", sorted(SQUATS))
def test_a_squatted_security_group_stops_the_launch_before_anything_is_created(
        squat: str, capsys: pytest.CaptureFixture[str], bundle: Path, victim_key: tuple[Path, str],
        recorded: list[tuple[str, str]]) -> None:
    permissions, tagged, why = SQUATS[squat]
    path, _victim = victim_key
    group_id = squat_group((GROUP_CIDR,), permissions, tagged=tagged)
    try:
        recorded.clear()
        code, out, err = launch(capsys, bundle, "--ssh-key", str(path), "--ssh-from", GROUP_CIDR)
        assert code == 2, out + err
        assert f"security group {netsec.group_name((GROUP_CIDR,))} ({group_id})" in err and why in err
        assert writes(recorded) == []
    finally:
        ec2().delete_security_group(GroupId=group_id)


@pytest.mark.usefixtures("aws")
def test_the_no_ingress_group_is_checked_too(capsys: pytest.CaptureFixture[str], bundle: Path,
                                             recorded: list[tuple[str, str]]) -> None:
    group_id = squat_group((), ALL_OPEN, tagged=True)
    try:
        recorded.clear()
        code, _out, err = launch(capsys, bundle)  # no key: spawn's group admits nothing
        assert code == 2, err
        assert "spawn-no-ingress" in err and "admits more than spawn would" in err
        assert writes(recorded) == []
    finally:
        ec2().delete_security_group(GroupId=group_id)


# -------------------------------------------------------------------------------- the bucket
def other_account_s3() -> Any:
    """An S3 client acting as another account (moto's server-mode account header)."""
    client = boto3.client("s3", region_name=REGION)

    def as_other(request: Any, **_kwargs: Any) -> None:
        request.headers["x-moto-account-id"] = OTHER_ACCOUNT

    client.meta.events.register("before-sign.s3.*", as_other)
    return client


def bundle_url(instance_id: str, region: str) -> str:
    attr = boto3.client("ec2", region_name=region).describe_instance_attribute(
        InstanceId=instance_id, Attribute="userData")
    raw = base64.b64decode(attr["UserData"]["Value"])
    message = email.message_from_bytes(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    install = next(p for p in message.walk() if not p.is_multipart()).get_payload(decode=True)
    assert isinstance(install, bytes)
    return base64.b64decode(install.decode().split("BUNDLE_URL_B64='")[1].split("'")[0]).decode()


@pytest.mark.usefixtures("aws")
def test_a_bucket_name_owned_by_another_account_falls_back_to_one_spawn_finds_again(
        capsys: pytest.CaptureFixture[str], bundle: Path) -> None:
    region = "us-west-2"  # no other test here launches there: the victim has no bucket yet
    primary = f"spawn-agent-{ACCOUNT}-{region}"
    other = other_account_s3()
    other.create_bucket(Bucket=primary, CreateBucketConfiguration={"LocationConstraint": region})
    mine = boto3.client("s3", region_name=region)
    assert primary not in [b["Name"] for b in mine.list_buckets()["Buckets"]]  # not the victim's

    urls = []
    for _ in range(2):
        code, out, err = spawn(capsys, "launch", "-t", "t3.micro", "--ttl", "1h", "--agent-bundle",
                               str(bundle), "--no-wait", "--json", "--region", region)
        assert code == 0, err
        urls.append(bundle_url(json.loads(out)["instances"][0]["instance_id"], region))
    fallbacks = [b["Name"] for b in mine.list_buckets()["Buckets"] if b["Name"].startswith(primary + "-")]
    assert len(fallbacks) == 1, fallbacks  # created once, found again by the second launch
    assert all(fallbacks[0] in url for url in urls), urls
    assert other.list_objects_v2(Bucket=primary).get("KeyCount", 0) == 0  # nothing went to theirs
    keys_in = [o["Key"] for o in mine.list_objects_v2(Bucket=fallbacks[0]).get("Contents", [])]
    assert keys_in and all(k.startswith("spored-bundle/") for k in keys_in)
