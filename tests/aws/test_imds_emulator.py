"""The IMDSv2 emulator against a moto server: every rule a client of EC2's metadata service sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import requests

from controller.sandbox.imds_emulator import TOKEN_HEADER, TTL_HEADER, ImdsEmulator
from tests.conftest import MotoServer

# one world for the module (a module-scoped fixture): its tests stay on one xdist worker
pytestmark = pytest.mark.xdist_group("test_imds_emulator")

REGION = "us-east-1"
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


@dataclass
class Instance:
    instance_id: str
    description: dict[str, Any]
    role_name: str
    profile_arn: str


def launch(*, profile: str | None = "spawn-test-profile", user_data: str | None = "#!/bin/sh\necho hi\n",
           metadata_tags: str = "enabled", spot: bool = False) -> str:
    ec2 = boto3.client("ec2", region_name=REGION)
    kwargs: dict[str, Any] = {
        "ImageId": "ami-12345678", "MinCount": 1, "MaxCount": 1, "InstanceType": "t3.micro",
        "MetadataOptions": {"HttpTokens": "required", "InstanceMetadataTags": metadata_tags},
        "TagSpecifications": [{"ResourceType": "instance", "Tags": [
            {"Key": "spawn:managed", "Value": "true"}, {"Key": "spawn:ttl", "Value": "2h"}]}],
    }
    if profile:
        kwargs["IamInstanceProfile"] = {"Name": profile}
    if user_data is not None:
        kwargs["UserData"] = user_data
    if spot:
        kwargs["InstanceMarketOptions"] = {"MarketType": "spot"}
    return str(ec2.run_instances(**kwargs)["Instances"][0]["InstanceId"])


def describe(instance_id: str) -> dict[str, Any]:
    ec2 = boto3.client("ec2", region_name=REGION)
    res = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]
    return dict(res["Instances"][0], OwnerId=res["OwnerId"])


@dataclass
class World:
    """One moto reset per module (a reset reloads IAM's managed policies: ~3 s on this machine);
    every test gets its own fresh instance, so tests don't see each other's changes."""

    url: str
    role_name: str
    profile_arn: str


@pytest.fixture(scope="module")
def world(moto_server: MotoServer) -> Iterator[World]:
    moto_server.reset()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", moto_server.url)
        iam = boto3.client("iam")
        iam.create_role(RoleName="spawn-test-role", Path="/spawn/", AssumeRolePolicyDocument=TRUST)
        profile = iam.create_instance_profile(InstanceProfileName="spawn-test-profile", Path="/spawn/")
        iam.add_role_to_instance_profile(InstanceProfileName="spawn-test-profile",
                                         RoleName="spawn-test-role")
        yield World(moto_server.url, "spawn-test-role", profile["InstanceProfile"]["Arn"])


@pytest.fixture
def instance(world: World) -> Instance:
    instance_id = launch()
    return Instance(instance_id, describe(instance_id), world.role_name, world.profile_arn)


@pytest.fixture
def emulator(world: World, instance: Instance) -> Iterator[ImdsEmulator]:
    with ImdsEmulator(instance.instance_id, REGION, world.url) as emu:
        yield emu


def token(emu: ImdsEmulator, ttl: int = 21600) -> str:
    resp = requests.put(f"{emu.url}/latest/api/token", headers={TTL_HEADER: str(ttl)}, timeout=30)
    assert resp.status_code == 200
    return resp.text


def get(emu: ImdsEmulator, path: str, tok: str | None = None) -> requests.Response:
    headers = {} if tok is None else {TOKEN_HEADER: tok}
    return requests.get(f"{emu.url}/latest/{path}", headers=headers, timeout=30)


def md(emu: ImdsEmulator, path: str) -> requests.Response:
    return get(emu, f"meta-data/{path}", token(emu))


# ----------------------------------------------------------------------------------------------
# Tokens
# ----------------------------------------------------------------------------------------------
def test_token_put_returns_a_fresh_token_and_echoes_the_ttl(emulator: ImdsEmulator) -> None:
    first = requests.put(f"{emulator.url}/latest/api/token", headers={TTL_HEADER: "21600"}, timeout=30)
    second = requests.put(f"{emulator.url}/latest/api/token", headers={TTL_HEADER: "1"}, timeout=30)
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers[TTL_HEADER] == "21600" and second.headers[TTL_HEADER] == "1"
    assert len(first.text) >= 40 and first.text != second.text


@pytest.mark.parametrize("ttl", [None, "0", "21601", "-1", "abc", "1.5", ""])
def test_token_put_with_missing_or_bad_ttl_is_400(emulator: ImdsEmulator, ttl: str | None) -> None:
    headers = {} if ttl is None else {TTL_HEADER: ttl}
    resp = requests.put(f"{emulator.url}/latest/api/token", headers=headers, timeout=30)
    assert resp.status_code == 400


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_other_verbs_on_the_token_path_are_405(emulator: ImdsEmulator, method: str) -> None:
    resp = requests.request(method, f"{emulator.url}/latest/api/token",
                            headers={TTL_HEADER: "60"}, timeout=30)
    assert resp.status_code == 405


def test_only_get_reads_metadata(emulator: ImdsEmulator) -> None:
    headers = {TOKEN_HEADER: token(emulator)}
    for method in ("PUT", "POST", "DELETE"):
        resp = requests.request(method, f"{emulator.url}/latest/meta-data/instance-id", headers=headers,
                                timeout=30)
        assert resp.status_code == 405


def test_token_put_through_a_proxy_is_403(emulator: ImdsEmulator) -> None:
    resp = requests.put(f"{emulator.url}/latest/api/token",
                        headers={TTL_HEADER: "60", "X-Forwarded-For": "10.0.0.9"}, timeout=30)
    assert resp.status_code == 403


def test_metadata_without_a_valid_token_is_401(emulator: ImdsEmulator, instance: Instance) -> None:
    assert get(emulator, "meta-data/instance-id").status_code == 401
    assert get(emulator, "meta-data/instance-id", "not-a-token").status_code == 401
    assert get(emulator, "dynamic/instance-identity/document").status_code == 401
    assert get(emulator, "user-data").status_code == 401
    assert get(emulator, "meta-data/no-such-thing").status_code == 401
    good = get(emulator, "meta-data/instance-id", token(emulator))
    assert (good.status_code, good.text) == (200, instance.instance_id)


class SteppedClock:
    """A monotonic clock that moves only when the test says: token lifetimes without waiting."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_tokens_expire_after_their_ttl(emulator: ImdsEmulator) -> None:
    emulator.monotonic = clock = SteppedClock()
    tok = token(emulator, ttl=1)
    assert get(emulator, "meta-data/instance-id", tok).status_code == 200
    clock.advance(0.9)
    assert get(emulator, "meta-data/instance-id", tok).status_code == 200
    clock.advance(0.2)
    assert get(emulator, "meta-data/instance-id", tok).status_code == 401


def test_token_lifetime_cap_and_expire_tokens(emulator: ImdsEmulator) -> None:
    emulator.monotonic = clock = SteppedClock()
    emulator.faults.set(token_ttl_cap=0.2)
    short = token(emulator, ttl=21600)
    assert get(emulator, "meta-data/instance-id", short).status_code == 200
    clock.advance(0.3)
    assert get(emulator, "meta-data/instance-id", short).status_code == 401
    emulator.faults.set(token_ttl_cap=None)
    long = token(emulator)
    emulator.expire_tokens()
    assert get(emulator, "meta-data/instance-id", long).status_code == 401


def test_tokens_optional_serves_v1_but_still_rejects_a_bad_token(world: World, instance: Instance) -> None:
    with ImdsEmulator(instance.instance_id, REGION, world.url, tokens_required=False) as emu:
        assert get(emu, "meta-data/instance-id").text == instance.instance_id
        assert get(emu, "meta-data/instance-id", "stale").status_code == 401


def test_tokens_required_can_follow_the_instances_http_tokens(world: World, instance: Instance) -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    with ImdsEmulator(instance.instance_id, REGION, world.url, tokens_required=None) as emu:
        assert get(emu, "meta-data/instance-id").status_code == 401
        ec2.modify_instance_metadata_options(InstanceId=instance.instance_id, HttpTokens="optional")
        assert get(emu, "meta-data/instance-id").text == instance.instance_id


def test_disabled_endpoint_is_403_for_everything(world: World, instance: Instance) -> None:
    with ImdsEmulator(instance.instance_id, REGION, world.url, endpoint_enabled=False) as emu:
        resp = requests.put(f"{emu.url}/latest/api/token", headers={TTL_HEADER: "60"}, timeout=30)
        assert resp.status_code == 403
        assert get(emu, "meta-data/instance-id").status_code == 403
        assert get(emu, "meta-data/instance-id", "whatever").status_code == 403


# ----------------------------------------------------------------------------------------------
# The tree
# ----------------------------------------------------------------------------------------------
def test_listings_and_unknown_paths(emulator: ImdsEmulator) -> None:
    tok = token(emulator)
    listing = get(emulator, "meta-data/", tok)
    assert listing.status_code == 200
    entries = listing.text.split("\n")
    for leaf in ("instance-id", "instance-type", "ami-id", "hostname", "local-ipv4", "instance-life-cycle"):
        assert leaf in entries
    for directory in ("placement/", "iam/", "tags/", "events/"):
        assert directory in entries
    assert "spot/" not in entries  # no notice yet
    assert get(emulator, "meta-data", tok).text == listing.text
    assert get(emulator, "meta-data/placement/", tok).text.split("\n") == ["availability-zone", "region"]
    assert get(emulator, "", tok).text.split("\n") == ["dynamic", "meta-data", "user-data"]
    assert get(emulator, "meta-data/no-such-key", tok).status_code == 404
    assert get(emulator, "meta-data/instance-id/deeper", tok).status_code == 404
    resp = requests.get(f"{emulator.url}/2009-04-04/meta-data/", headers={TOKEN_HEADER: tok}, timeout=30)
    assert resp.status_code == 404


def test_instance_facts_match_ec2(emulator: ImdsEmulator, instance: Instance) -> None:
    d = instance.description
    expected = {
        "instance-id": d["InstanceId"],
        "instance-type": "t3.micro",
        "ami-id": "ami-12345678",
        "placement/region": REGION,
        "placement/availability-zone": d["Placement"]["AvailabilityZone"],
        "instance-life-cycle": "on-demand",
        "local-ipv4": d["PrivateIpAddress"],
        "hostname": d["PrivateDnsName"],
    }
    tok = token(emulator)
    got = {path: get(emulator, f"meta-data/{path}", tok).text for path in expected}
    assert got == expected


def test_spot_instance_life_cycle(world: World, instance: Instance) -> None:
    spot_id = launch(spot=True)
    with ImdsEmulator(spot_id, REGION, world.url) as emu:
        assert md(emu, "instance-life-cycle").text == "spot"


def test_identity_document(emulator: ImdsEmulator, instance: Instance) -> None:
    doc = get(emulator, "dynamic/instance-identity/document", token(emulator)).json()
    d = instance.description
    assert doc["instanceId"] == instance.instance_id
    assert doc["region"] == REGION
    assert doc["accountId"] == d["OwnerId"] == "123456789012"
    assert doc["instanceType"] == "t3.micro"
    assert doc["imageId"] == "ami-12345678"
    assert doc["architecture"] == d["Architecture"]
    assert doc["availabilityZone"] == d["Placement"]["AvailabilityZone"]
    assert doc["privateIp"] == d["PrivateIpAddress"]
    assert doc["pendingTime"] == d["LaunchTime"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert doc["version"]


def test_user_data(world: World, emulator: ImdsEmulator, instance: Instance) -> None:
    resp = get(emulator, "user-data", token(emulator))
    assert (resp.status_code, resp.content) == (200, b"#!/bin/sh\necho hi\n")
    bare = launch(user_data=None)
    with ImdsEmulator(bare, REGION, world.url) as emu:
        assert get(emu, "user-data", token(emu)).status_code == 404
        assert "user-data" not in get(emu, "", token(emu)).text.split("\n")


# ----------------------------------------------------------------------------------------------
# IAM: real credentials from sts:AssumeRole
# ----------------------------------------------------------------------------------------------
def test_iam_info_and_role_listing(emulator: ImdsEmulator, instance: Instance) -> None:
    tok = token(emulator)
    info = get(emulator, "meta-data/iam/info", tok).json()
    assert info["Code"] == "Success"
    assert info["InstanceProfileArn"] == instance.profile_arn
    assert info["InstanceProfileId"] == instance.description["IamInstanceProfile"]["Id"]
    assert info["LastUpdated"].endswith("Z")
    assert get(emulator, "meta-data/iam/security-credentials/", tok).text == instance.role_name


def test_role_credentials_are_real_and_cached(emulator: ImdsEmulator, instance: Instance) -> None:
    tok = token(emulator)
    first = get(emulator, f"meta-data/iam/security-credentials/{instance.role_name}", tok).json()
    second = get(emulator, f"meta-data/iam/security-credentials/{instance.role_name}", tok).json()
    assert first["Code"] == "Success" and first["Type"] == "AWS-HMAC"
    assert first["AccessKeyId"] == second["AccessKeyId"]
    expiration = datetime.strptime(first["Expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert expiration - datetime.now(UTC) > timedelta(minutes=30)
    sts = boto3.client("sts", aws_access_key_id=first["AccessKeyId"],
                       aws_secret_access_key=first["SecretAccessKey"], aws_session_token=first["Token"])
    arn = sts.get_caller_identity()["Arn"]
    assert arn.endswith(f":assumed-role/{instance.role_name}/{instance.instance_id}")


def test_no_instance_profile_means_no_iam_directory(world: World, instance: Instance) -> None:
    bare = launch(profile=None)
    with ImdsEmulator(bare, REGION, world.url) as emu:
        assert "iam/" not in md(emu, "").text.split("\n")
        assert md(emu, "iam/security-credentials/").status_code == 404


def test_explicit_role_name_overrides_the_profile(world: World, instance: Instance) -> None:
    other = f"other-role-{instance.instance_id}"
    boto3.client("iam").create_role(RoleName=other, AssumeRolePolicyDocument=TRUST)
    with ImdsEmulator(instance.instance_id, REGION, world.url, role_name=other) as emu:
        assert md(emu, "iam/security-credentials/").text == other
        assert md(emu, f"iam/security-credentials/{other}").json()["Code"] == "Success"


# ----------------------------------------------------------------------------------------------
# Tags, live from EC2
# ----------------------------------------------------------------------------------------------
def test_tags_are_listed_and_read_live(emulator: ImdsEmulator, instance: Instance) -> None:
    assert md(emulator, "tags/instance").text.split("\n") == ["spawn:managed", "spawn:ttl"]
    assert md(emulator, "tags/instance/spawn:ttl").text == "2h"
    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.create_tags(Resources=[instance.instance_id], Tags=[
        {"Key": "spawn:ttl", "Value": "4h"}, {"Key": "has space", "Value": "x"},
        {"Key": "a/b", "Value": "y"}, {"Key": "ok-._+=,@:9", "Value": "z"}])
    assert md(emulator, "tags/instance/spawn:ttl").text == "4h"
    keys = md(emulator, "tags/instance").text.split("\n")
    assert sorted(keys) == ["ok-._+=,@:9", "spawn:managed", "spawn:ttl"]
    assert md(emulator, "tags/instance/has space").status_code == 404
    ec2.delete_tags(Resources=[instance.instance_id], Tags=[{"Key": "spawn:ttl"}])
    assert md(emulator, "tags/instance/spawn:ttl").status_code == 404


def test_tags_off_is_404(world: World, instance: Instance) -> None:
    with ImdsEmulator(instance.instance_id, REGION, world.url, tags_in_metadata=False) as emu:
        assert md(emu, "tags/instance").status_code == 404
        assert md(emu, "tags/instance/spawn:managed").status_code == 404
        assert "tags/" not in md(emu, "").text.split("\n")


def test_tags_follow_the_instances_metadata_option(world: World, instance: Instance) -> None:
    hidden = launch(metadata_tags="disabled")
    with ImdsEmulator(hidden, REGION, world.url) as emu:
        assert md(emu, "tags/instance").status_code == 404
        boto3.client("ec2", region_name=REGION).modify_instance_metadata_options(
            InstanceId=hidden, InstanceMetadataTags="enabled")
        assert md(emu, "tags/instance/spawn:managed").text == "true"


# ----------------------------------------------------------------------------------------------
# Spot and rebalance notices
# ----------------------------------------------------------------------------------------------
def test_spot_notice_is_404_until_armed(emulator: ImdsEmulator) -> None:
    assert md(emulator, "spot/instance-action").status_code == 404
    at = datetime(2026, 11, 28, 3, 10, tzinfo=UTC)
    emulator.arm_spot("stop", at)
    assert md(emulator, "spot/instance-action").json() == {"action": "stop", "time": "2026-11-28T03:10:00Z"}
    assert md(emulator, "spot/termination-time").text == "2026-11-28T03:10:00Z"
    assert "spot/" in md(emulator, "").text.split("\n")
    emulator.disarm_spot()
    assert md(emulator, "spot/instance-action").status_code == 404


def test_spot_notice_defaults_to_terminate_in_two_minutes(emulator: ImdsEmulator) -> None:
    emulator.arm_spot()
    notice = md(emulator, "spot/instance-action").json()
    when = datetime.strptime(notice["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert notice["action"] == "terminate"
    assert timedelta(seconds=100) < when - datetime.now(UTC) <= timedelta(seconds=120)


def test_arm_spot_rejects_unknown_actions(emulator: ImdsEmulator) -> None:
    from spored.errors import ValidationError

    with pytest.raises(ValidationError, match="reboot"):
        emulator.arm_spot("reboot")


def test_rebalance_notice(emulator: ImdsEmulator) -> None:
    assert md(emulator, "events/recommendations/rebalance").status_code == 404
    emulator.arm_rebalance(datetime(2026, 11, 28, 3, 5, tzinfo=UTC))
    assert md(emulator, "events/recommendations/rebalance").json() == {"noticeTime": "2026-11-28T03:05:00Z"}
    emulator.disarm_rebalance()
    assert md(emulator, "events/recommendations/rebalance").status_code == 404


# ----------------------------------------------------------------------------------------------
# Faults and the request log
# ----------------------------------------------------------------------------------------------
def test_503_with_retry_after_for_the_next_n_requests(emulator: ImdsEmulator) -> None:
    tok = token(emulator)
    emulator.faults.set(fail_503=2, retry_after=3)
    statuses = [get(emulator, "meta-data/instance-id", tok) for _ in range(3)]
    assert [r.status_code for r in statuses] == [503, 503, 200]
    assert statuses[0].headers["Retry-After"] == "3"


def test_dropped_connections(emulator: ImdsEmulator) -> None:
    tok = token(emulator)
    emulator.faults.set(drop=1)
    with pytest.raises(requests.ConnectionError):
        get(emulator, "meta-data/instance-id", tok)
    assert get(emulator, "meta-data/instance-id", tok).status_code == 200
    assert emulator.log.count(status=0) == 1


def test_delay(emulator: ImdsEmulator) -> None:
    emulator.faults.set(delay=0.3)
    with pytest.raises(requests.Timeout):
        requests.put(f"{emulator.url}/latest/api/token", headers={TTL_HEADER: "60"}, timeout=0.1)
    start = time.monotonic()
    token(emulator)
    assert time.monotonic() - start >= 0.3


def test_faults_reject_unknown_or_negative_values(emulator: ImdsEmulator) -> None:
    from spored.errors import ValidationError

    with pytest.raises(ValidationError, match=r"faults\.explode"):
        emulator.faults.set(explode=1)
    with pytest.raises(ValidationError, match=r"faults\.drop"):
        emulator.faults.set(drop=-1)
    with pytest.raises(ValidationError, match=r"faults\.fail_503"):
        emulator.faults.set(fail_503=1.5)


def test_request_log_counts_calls_and_never_holds_tokens(emulator: ImdsEmulator) -> None:
    tok = token(emulator)
    token(emulator)
    get(emulator, "meta-data/instance-id", tok)
    get(emulator, "meta-data/instance-id")
    assert emulator.log.count(method="PUT", path="/latest/api/token") == 2
    assert emulator.log.count(path="/latest/meta-data/instance-id", status=200) == 1
    assert emulator.log.count(path="/latest/meta-data/instance-id", status=401) == 1
    assert tok not in repr(emulator.log.records())


def test_concurrent_clients(emulator: ImdsEmulator, instance: Instance) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def fetch(_: int) -> str:
        return md(emulator, "instance-id").text

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(fetch, range(24)))
    assert results == [instance.instance_id] * 24


def test_vanished_instance_is_a_server_error_but_notices_still_work(world: World, instance: Instance) -> None:
    with ImdsEmulator("i-0000000000000dead", REGION, world.url) as emu:
        assert md(emu, "instance-id").status_code == 500
        assert md(emu, "spot/instance-action").status_code == 500  # "is there a notice?" needs the tree
        emu.arm_spot("terminate", datetime(2026, 11, 28, 4, 0, tzinfo=UTC))
        emu.arm_rebalance(datetime(2026, 11, 28, 3, 58, tzinfo=UTC))
        # Armed notices are served without EC2, as AWS's IMDS serves them without the EC2 API.
        assert md(emu, "spot/instance-action").json()["action"] == "terminate"
        assert md(emu, "events/recommendations/rebalance").status_code == 200


# ----------------------------------------------------------------------------------------------
# As a separate process, with the emulator-only control API
# ----------------------------------------------------------------------------------------------
def test_runs_as_a_process_with_a_control_api(world: World, instance: Instance) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.sandbox.imds_emulator", "--instance-id", instance.instance_id,
         "--region", REGION, "--aws-endpoint", world.url, "--bind", "127.0.0.1", "--port", "0",
         "--no-tags-in-metadata"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready"
        url = ready["url"]
        tok = requests.put(f"{url}/latest/api/token", headers={TTL_HEADER: "60"}, timeout=30).text
        headers = {TOKEN_HEADER: tok}

        def meta(path: str) -> requests.Response:
            return requests.get(f"{url}/latest/meta-data/{path}", headers=headers, timeout=30)

        assert meta("instance-id").text == instance.instance_id
        assert meta("tags/instance").status_code == 404
        assert meta("spot/instance-action").status_code == 404
        armed = requests.post(f"{url}/_emulator/spot",
                              json={"action": "hibernate", "time": "2026-11-28T04:00:00Z"}, timeout=30)
        assert armed.status_code == 200
        assert meta("spot/instance-action").json() == {"action": "hibernate", "time": "2026-11-28T04:00:00Z"}
        assert requests.post(f"{url}/_emulator/rebalance", json={}, timeout=30).status_code == 200
        assert "noticeTime" in meta("events/recommendations/rebalance").json()
        bad = requests.post(f"{url}/_emulator/spot", json={"action": "explode"}, timeout=30)
        assert bad.status_code == 400 and "explode" in bad.json()["error"]
        assert requests.post(f"{url}/_emulator/faults", json={"fail_503": 1}, timeout=30).status_code == 200
        assert meta("instance-id").status_code == 503
        requests.post(f"{url}/_emulator/tokens/expire", timeout=30)
        assert meta("instance-id").status_code == 401
        log = requests.get(f"{url}/_emulator/requests", timeout=30).json()
        assert [r["status"] for r in log if r["path"] == "/latest/meta-data/instance-id"] == [200, 503, 401]
        assert all(not r["path"].startswith("/_emulator") for r in log)
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_process_reports_a_busy_port(world: World, instance: Instance) -> None:
    with ImdsEmulator(instance.instance_id, REGION, world.url) as emu:
        port = emu.url.rsplit(":", 1)[1]
        done = subprocess.run(
            [sys.executable, "-m", "controller.sandbox.imds_emulator", "--instance-id", instance.instance_id,
             "--region", REGION, "--aws-endpoint", world.url, "--port", port],
            capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1
    assert json.loads(done.stdout)["event"] == "error"


def test_process_logs_failures_once_on_stderr(world: World, instance: Instance) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.sandbox.imds_emulator", "--instance-id", "i-0000000000000dead",
         "--region", REGION, "--aws-endpoint", world.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        tok = requests.put(f"{url}/latest/api/token", headers={TTL_HEADER: "60"}, timeout=30).text
        for _ in range(3):
            resp = requests.get(f"{url}/latest/meta-data/instance-id", headers={TOKEN_HEADER: tok},
                                timeout=10)
            assert resp.status_code == 500
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    failures = [line for line in err.splitlines() if "failed" in line]
    assert len(failures) == 1 and "i-0000000000000dead" in failures[0]
    assert tok not in err
