"""`spawn launch` against the moto server: what RunInstances really received, --count, --dry-run,
rollback after injected failures, and bad inputs that must create nothing."""

from __future__ import annotations

import base64
import contextlib
import email
import gzip
import hashlib
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

from controller import aws as controller_aws
from controller.cli import main
from spored.contract import parse_timestamp
from spored.errors import ExitStatus
from tests.conftest import MotoServer

# one moto state for the module (a module-scoped fixture): its tests stay on one xdist worker
pytestmark = [pytest.mark.shared_moto, pytest.mark.xdist_group("test_launch_run")]

REGION = "us-east-1"
WRITE_PREFIXES = ("Create", "Put", "Run", "Import", "Authorize", "Delete", "Terminate", "Attach",
                  "Add", "Upload", "Start", "Stop", "Tag", "Remove", "Detach")


@contextlib.contextmanager
def on_event(event: str, handler: Callable[..., None]) -> Iterator[None]:
    """A botocore event handler on the controller's session, for the duration of a test."""
    events = controller_aws.session().events
    events.register(event, handler)
    try:
        yield
    finally:
        events.unregister(event, handler)





def fail_on(operation: str, *, after: str | None = None, times: int = 1000) -> Callable[[str, str], None]:
    """A CALL_HOOKS observer that raises when ``operation`` is called (after ``after`` was)."""
    state = {"armed": after is None, "left": times}

    def hook(_service: str, op: str) -> None:
        if op == after:
            state["armed"] = True
        elif op == operation and state["armed"] and state["left"] > 0:
            from botocore.exceptions import ClientError

            state["left"] -= 1
            raise ClientError({"Error": {"Code": "InjectedFailure", "Message": f"{op} failed (test)"}}, op)

    return hook


def spawn(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def ec2() -> Any:
    return boto3.client("ec2", region_name=REGION)


def inventory() -> dict[str, Any]:
    """Everything a launch could create, as plain comparable data."""
    e, iam, s3 = ec2(), boto3.client("iam"), boto3.client("s3", region_name=REGION)
    instances = sorted(i["InstanceId"] for r in e.describe_instances()["Reservations"]
                       for i in r["Instances"] if i["State"]["Name"] != "terminated")
    objects = {}
    for b in s3.list_buckets().get("Buckets", []):
        listed = s3.list_objects_v2(Bucket=b["Name"]).get("Contents", [])
        objects[b["Name"]] = sorted(o["Key"] for o in listed)
    return {
        "instances": instances,
        "groups": sorted(g["GroupName"] for g in e.describe_security_groups()["SecurityGroups"]
                         if g["GroupName"] != "default"),
        "keys": sorted(k["KeyName"] for k in e.describe_key_pairs()["KeyPairs"]),
        "roles": sorted(r["RoleName"] for r in iam.list_roles()["Roles"]),
        "profiles": sorted(p["InstanceProfileName"]
                           for p in iam.list_instance_profiles()["InstanceProfiles"]),
        "objects": objects,
    }


def user_data_parts(instance_id: str) -> list[tuple[str, str | None, bytes]]:
    attr = ec2().describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    raw = base64.b64decode(attr["UserData"]["Value"])
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    msg = email.message_from_bytes(raw)
    return [(p.get_content_type(), p.get_filename(), p.get_payload(decode=True))  # type: ignore[misc]
            for p in msg.walk() if not p.is_multipart()]


@pytest.mark.usefixtures("aws", "home")
def test_launch_passes_the_exact_parameters(capsys: pytest.CaptureFixture[str], bundle: Path,
                                            ssh_key: Path, tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_bytes(b"#!/bin/bash\necho 'train $(hostname)' > /tmp/out\n")
    sent: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        sent.append(dict(params))

    with on_event("provide-client-params.ec2.RunInstances", record):
        code, out, err = spawn(capsys, "launch", "--instance-type", "t3.micro", "--name", "train-1",
                               "--ttl", "2h", "--ssh-key", str(ssh_key), "--ssh-from", "203.0.113.7/32",
                               "--user-data", str(script), "--imds-hop-limit", "2",
                               "--client-token", "retry-me-123", "--agent-bundle", str(bundle),
                               "--no-wait", "--json", "--region", REGION)
    assert code == 0, err
    result = json.loads(out)
    (iid,) = [i["instance_id"] for i in result["instances"]]
    inst = ec2().describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]

    assert inst["MetadataOptions"]["HttpTokens"] == "required"
    assert inst["MetadataOptions"]["HttpEndpoint"] == "enabled"
    assert inst["MetadataOptions"]["HttpPutResponseHopLimit"] == 2
    assert inst["MetadataOptions"]["InstanceMetadataTags"] == "enabled"
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags["spawn:managed"] == "true" and tags["Name"] == "train-1"
    assert tags["spawn:ttl"] == "2h" and tags["spawn:on-complete"] == "terminate"
    assert tags["spawn:expires-at"] == result["deadline"]
    assert tags["spawn:launched-by"] == "arn:aws:sts::123456789012:user/moto"
    assert "spawn:idle-timeout" not in tags  # a TTL was given: no default idle timeout
    role = tags["spawn:role"]
    profile = boto3.client("iam").get_instance_profile(InstanceProfileName=role)["InstanceProfile"]
    assert inst["IamInstanceProfile"]["Arn"] == profile["Arn"]
    assert [r["RoleName"] for r in profile["Roles"]] == [role]
    assert sent[0]["ClientToken"] == "retry-me-123"
    assert sent[0]["IamInstanceProfile"] == {"Arn": profile["Arn"]}

    shutdown = ec2().describe_instance_attribute(InstanceId=iid,
                                                 Attribute="instanceInitiatedShutdownBehavior")
    assert shutdown["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"

    volumes = ec2().describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [iid]}])["Volumes"]
    assert volumes
    for volume in volumes:
        vtags = {t["Key"]: t["Value"] for t in volume.get("Tags", [])}
        assert vtags["spawn:managed"] == "true" and vtags["spawn:expires-at"] == tags["spawn:expires-at"]

    parts = user_data_parts(iid)
    assert [p[1] for p in parts] == ["00-spored-install.sh", "50-user-data"]
    install = parts[0][2].decode()
    assert hashlib.sha256(bundle.read_bytes()).hexdigest() in install
    assert "train-1" not in install and "203.0.113.7" not in install
    assert parts[1][2] == script.read_bytes()

    (group,) = inst["SecurityGroups"]
    perms = ec2().describe_security_groups(GroupIds=[group["GroupId"]])["SecurityGroups"][0]["IpPermissions"]
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]])
            for p in perms] == [("tcp", 22, 22, ["203.0.113.7/32"])]
    key = ec2().describe_key_pairs(KeyNames=[inst["KeyName"]])["KeyPairs"][0]
    assert key["KeyName"].startswith("spawn-ed25519-")

    # a second launch with the same key and CIDR reuses the key pair and the group
    code, out2, err2 = spawn(capsys, "launch", "--instance-type", "t3.micro", "--ttl", "1h",
                             "--ssh-key", str(ssh_key), "--ssh-from", "203.0.113.7/32",
                             "--agent-bundle", str(bundle), "--no-wait", "--json", "--region", REGION)
    assert code == 0, err2
    inst2 = ec2().describe_instances(InstanceIds=[json.loads(out2)["instances"][0]["instance_id"]])
    inst2 = inst2["Reservations"][0]["Instances"][0]
    assert inst2["KeyName"] == inst["KeyName"] and inst2["SecurityGroups"] == inst["SecurityGroups"]
    assert [k["KeyName"] for k in ec2().describe_key_pairs()["KeyPairs"]].count(inst["KeyName"]) == 1


def test_count_launches_all_in_one_call(aws: MotoServer, capsys: pytest.CaptureFixture[str], home: Path,
                                       bundle: Path, recorded: list[tuple[str, str]]) -> None:
    code, out, err = spawn(capsys, "launch", "-t", "t3.micro", "--count", "3", "--name", "fleet",
                           "--agent-bundle", str(bundle), "--no-wait", "--json", "--region", REGION)
    assert code == 0, err
    assert recorded.count(("ec2", "RunInstances")) == 1
    ids = [i["instance_id"] for i in json.loads(out)["instances"]]
    assert len(ids) == 3
    described = [i for r in ec2().describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]]
    for inst in described:
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert tags["Name"] == "fleet" and tags["spawn:idle-timeout"] == "1h"  # the default applies
    assert "idle timeout of 1h applies" in err


@pytest.mark.usefixtures("aws", "home")
def test_dry_run_makes_no_writes(capsys: pytest.CaptureFixture[str], bundle: Path, ssh_key: Path,
                                 recorded: list[tuple[str, str]]) -> None:
    before = inventory()
    recorded.clear()
    code, out, err = spawn(capsys, "launch", "-t", "t3.micro", "--ttl", "1h", "--ssh-key", str(ssh_key),
                           "--ssh-from", "203.0.113.7/32",
                           "--iam-policy", "s3:ReadOnly", "--agent-bundle", str(bundle), "--dry-run",
                           "--json", "--region", REGION)
    assert code == 0, err
    writes = [op for _svc, op in recorded if op.startswith(WRITE_PREFIXES)]
    assert writes == []
    assert inventory() == before
    plan = json.loads(out)
    assert plan["dry_run"] is True
    assert plan["run_instances"]["MetadataOptions"]["InstanceMetadataTags"] == "enabled"
    assert "spawn-agent" in plan["iam"]["inline_policies"]
    assert plan["user_data"]["parts"][0]["filename"] == "00-spored-install.sh"
    assert any(w.startswith("RunInstances") for w in plan["would_create"])


def test_rollback_when_run_instances_fails(aws: MotoServer, capsys: pytest.CaptureFixture[str], home: Path,
                                          bundle: Path, ssh_key: Path) -> None:
    before = inventory()
    hook = fail_on("RunInstances")
    controller_aws.CALL_HOOKS.append(hook)
    try:
        code, _out, err = spawn(capsys, "launch", "-t", "t3.micro", "--ttl", "1h", "--iam-role", "job-role",
                                "--ssh-key", str(ssh_key), "--ssh-from", "203.0.113.99/32",
                                "--agent-bundle", str(bundle), "--no-wait",
                                "--region", REGION)
    finally:
        controller_aws.CALL_HOOKS.remove(hook)
    assert code == 4
    after = inventory()
    assert after["instances"] == before["instances"]
    assert after["groups"] == before["groups"] and after["keys"] == before["keys"]
    assert after["roles"] == before["roles"] and after["profiles"] == before["profiles"]  # named role removed
    assert after["objects"] == before["objects"]  # the uploaded bundle object is gone
    assert "rolling back" in err and "removed: security group" in err and "kept: bucket" in err


def test_rollback_after_instances_were_launched(aws: MotoServer, capsys: pytest.CaptureFixture[str],
                                               home: Path, bundle: Path) -> None:
    before = inventory()
    hook = fail_on("DescribeInstances", after="RunInstances", times=1)  # the running waiter fails
    controller_aws.CALL_HOOKS.append(hook)
    try:
        code, _out, err = spawn(capsys, "launch", "-t", "t3.micro", "--ttl", "1h", "--count", "2",
                                "--ssh-from", "198.51.100.77/32", "--agent-bundle", str(bundle),
                                "--no-wait", "--region", REGION)
    finally:
        controller_aws.CALL_HOOKS.remove(hook)
    assert code == 4
    after = inventory()
    assert after["instances"] == before["instances"]  # both were launched, both terminated
    assert after["groups"] == before["groups"]  # its group, deleted once the instances were gone
    assert "removed: instances" in err and "removed: security group" in err


def test_content_addressed_role_is_kept_and_reused(aws: MotoServer, capsys: pytest.CaptureFixture[str],
                                                   home: Path, bundle: Path) -> None:
    before = inventory()["roles"]
    hook = fail_on("RunInstances")
    controller_aws.CALL_HOOKS.append(hook)
    try:  # a policy no other test uses, so this launch creates its content-addressed role
        code, _out, err = spawn(capsys, "launch", "-t", "t3.micro", "--ttl", "1h", "--iam-policy",
                                "sqs:ReadOnly", "--agent-bundle", str(bundle), "--no-wait",
                                "--region", REGION)
    finally:
        controller_aws.CALL_HOOKS.remove(hook)
    assert code == 4 and "kept" in err
    roles = inventory()["roles"]
    (new,) = set(roles) - set(before)
    assert new.startswith("spawn-")
    code, _out, err = spawn(capsys, "launch", "-t", "t3.micro", "--ttl", "1h", "--iam-policy", "sqs:ReadOnly",
                           "--agent-bundle", str(bundle), "--no-wait", "--json", "--region", REGION)
    assert code == 0, err
    assert inventory()["roles"] == roles


@pytest.fixture
def served_bundle(bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The bundle over https from loopback, with a throwaway CA the controller is told to trust."""
    from tests.tls import make_ca

    ca = make_ca(tmp_path / "tls")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca.ca_file))
    directory = str(bundle.parent)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=directory, **kwargs)

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = ca.server_context().wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/{bundle.name}"
    finally:
        server.shutdown()
        server.server_close()


def test_bundle_from_a_url_is_hashed_by_the_controller(aws: MotoServer, capsys: pytest.CaptureFixture[str],
                                                       home: Path, bundle: Path, served_bundle: str) -> None:
    before = inventory()
    code, out, err = spawn(capsys, "launch", "-t", "t3.micro", "--ttl", "1h", "--agent-bundle", served_bundle,
                           "--no-wait", "--json", "--region", REGION)
    assert code == 0, err
    iid = json.loads(out)["instances"][0]["instance_id"]
    install = user_data_parts(iid)[0][2].decode()
    url_b64 = install.split("BUNDLE_URL_B64='")[1].split("'")[0]
    assert base64.b64decode(url_b64).decode() == served_bundle
    assert f"BUNDLE_SHA256='{hashlib.sha256(bundle.read_bytes()).hexdigest()}'" in install
    assert inventory()["objects"] == before["objects"]  # nothing uploaded for a URL


def test_spot_and_hibernation_options(aws: MotoServer, capsys: pytest.CaptureFixture[str], home: Path,
                                      bundle: Path) -> None:
    code, out, err = spawn(capsys, "launch", "-t", "t3.micro", "--ttl", "1h", "--spot", "--spot-max-price",
                           "0.01", "--agent-bundle", str(bundle), "--no-wait", "--json", "--region", REGION)
    assert code == 0, err
    spot = ec2().describe_instances(InstanceIds=[json.loads(out)["instances"][0]["instance_id"]])
    assert spot["Reservations"][0]["Instances"][0]["InstanceLifecycle"] == "spot"

    code, out, err = spawn(capsys, "launch", "-t", "m7g.large", "--ttl", "1h", "--on-complete", "hibernate",
                           "--agent-bundle", str(bundle), "--no-wait", "--json", "--region", REGION)
    assert code == 0, err
    iid = json.loads(out)["instances"][0]["instance_id"]
    inst = ec2().describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert inst["HibernationOptions"] == {"Configured": True}
    assert inst["Architecture"] == "arm64"
    shutdown = ec2().describe_instance_attribute(InstanceId=iid,
                                                 Attribute="instanceInitiatedShutdownBehavior")
    assert shutdown["InstanceInitiatedShutdownBehavior"]["Value"] == "stop"


def test_agent_ready_is_reported_not_confirmed_after_a_bounded_wait(
        aws: MotoServer, capsys: pytest.CaptureFixture[str], home: Path, bundle: Path) -> None:
    started = time.monotonic()
    code, out, err = spawn(capsys, "launch", "-t", "t3.micro", "--ttl", "1h", "--agent-wait", "2s",
                           "--agent-bundle", str(bundle), "--json", "--region", REGION)
    assert code == ExitStatus.AGENT_UNCONFIRMED, err
    result = json.loads(out)
    assert result["agent"] == "not confirmed after 2s" and result["agent_confirmed"] is False
    assert time.monotonic() - started < 60  # bounded: a 2 s wait, not the default minutes (shared machine)
    # the instance is kept, and the user is told what ends it
    assert ec2().describe_instances(InstanceIds=[result["instances"][0]["instance_id"]])[
        "Reservations"][0]["Instances"][0]["State"]["Name"] == "running"
    assert f"will power off at {result['failsafe_at']} (then terminate) unless the agent reports" in err
    failsafe_at = parse_timestamp(result["failsafe_at"])
    assert failsafe_at == parse_timestamp(result["deadline"]) + timedelta(minutes=30)


def test_launch_exits_7_when_the_agent_reports_denied_permissions_on_its_console(
        aws: MotoServer, capsys: pytest.CaptureFixture[str], home: Path, bundle: Path,
        console_outputs: dict[str, str]) -> None:
    def agent_reports(params: Any, **_: Any) -> None:
        # Play the agent whose CreateTags is denied: only its console line shows.
        for r in ec2().describe_instances(Filters=[{"Name": "tag:spawn:managed", "Values": ["true"]}])[
                "Reservations"]:
            for i in r["Instances"]:
                console_outputs[i["InstanceId"]] = (
                    "[   12.3] spored[812]: spored: permissions denied: ec2:StopInstances,ec2:CreateTags\n")

    with on_event("provide-client-params.ec2.DescribeInstances", agent_reports):
        code, out, err = spawn(capsys, "launch", "-t", "t3.micro", "--ttl", "1h", "--on-complete", "stop",
                               "--agent-wait", "2s", "--agent-bundle", str(bundle), "--json",
                               "--region", REGION)
    assert code == ExitStatus.AGENT_UNCONFIRMED, err
    result = json.loads(out)
    assert result["agent"].startswith(
        "permissions denied: ec2:StopInstances,ec2:CreateTags (from the console)")
    assert "(then stop) unless the agent reports" in err


def test_no_timeout_says_that_nothing_is_armed(aws: MotoServer, capsys: pytest.CaptureFixture[str],
                                               home: Path, bundle: Path) -> None:
    code, out, err = spawn(capsys, "launch", "-t", "t3.micro", "--no-timeout", "--agent-bundle", str(bundle),
                           "--no-wait", "--json", "--region", REGION)
    assert code == 0, err
    assert "--no-timeout: no failsafe is armed" in err
    assert json.loads(out)["failsafe_at"] is None


def test_agent_ready_when_the_agent_tags_its_instance(aws: MotoServer, capsys: pytest.CaptureFixture[str],
                                                      home: Path, bundle: Path) -> None:
    launched: list[str] = []

    def agent_writes_status(params: Any, **_: Any) -> None:
        # Play the agent: once the instance exists, it writes its status tag.
        if not launched:
            ids = [i["InstanceId"] for r in ec2().describe_instances(
                Filters=[{"Name": "tag:spawn:managed", "Values": ["true"]}])["Reservations"]
                for i in r["Instances"]]
            if ids:
                ec2().create_tags(Resources=ids, Tags=[{"Key": "spawn:agent-status",
                                                        "Value": "ok 2026-11-28T00:00:00Z"}])
                launched.extend(ids)

    with on_event("provide-client-params.ec2.DescribeInstances", agent_writes_status):
        code, out, err = spawn(capsys, "launch", "-t", "t3.micro", "--ttl", "1h", "--agent-wait", "20s",
                               "--agent-bundle", str(bundle), "--json", "--region", REGION)
    assert code == 0, err
    assert json.loads(out)["agent"] == "ready"


def arm_ami() -> str:
    ssm = boto3.client("ssm", region_name=REGION)
    name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"
    return str(ssm.get_parameter(Name=name)["Parameter"]["Value"])


BAD_INPUTS: list[tuple[list[str], str]] = [
    (["-t", "t3.nonexistent"], "--instance-type"),
    (["-t", "t3.micro", "--ttl", "1fortnight"], "--ttl"),
    (["-t", "t3.micro", "--idle-timeout=-5m"], "--idle-timeout"),
    (["-t", "t3.micro", "--no-timeout", "--ttl", "1h"], "--no-timeout"),
    (["-t", "t3.micro", "--count", "0"], "--count"),
    (["-t", "t3.micro", "--name", "x$(reboot)"], "--name"),
    (["-t", "t3.micro", "--on-complete", "nap"], "--on-complete"),
    (["-t", "t3.micro", "--spot", "--on-complete", "stop"], "--on-complete"),
    (["-t", "g5.xlarge", "--hibernate"], "--hibernate"),
    (["-t", "g5.xlarge"], "/aws/service/deeplearning/ami/x86_64/"),  # GPU type -> the GPU AMI's parameter
    (["-t", "t3.micro", "--ami", "ami-0123456789abcdef0"], "--ami"),
    (["-t", "t3.micro", "--ami", "ARM"], "--ami"),
    (["-t", "t3.micro", "--subnet", "subnet-0123456789abcdef0"], "--subnet"),
    (["-t", "t3.micro", "--security-group", "sg-0123456789abcdef0"], "--security-group"),
    (["-t", "t3.micro", "--key-name", "no-such-key"], "--key-name"),
    (["-t", "t3.micro", "--ssh-from", "300.1.1.1/32"], "--ssh-from"),
    (["-t", "t3.micro", "--imds-hop-limit", "0"], "--imds-hop-limit"),
    (["-t", "t3.micro", "--iam-policy", "s3:ReadOnlyy"], "--iam-policy"),
    (["-t", "t3.micro", "--iam-managed-policies", "arn:aws:iam::policy/Nope"], "--iam-managed-policies"),
    (["-t", "t3.micro", "--agent-bundle", "ftp://example.com/b.tgz"], "--agent-bundle"),
    (["-t", "t3.micro", "--agent-bundle", "http://127.0.0.1:9/spored-bundle.tar.gz"], "--agent-bundle"),
    (["-t", "t3.micro", "--user-data", "PLAIN"], "--user-data"),
    (["-t", "t3.micro", "--region", "mars-north-1x"], "--region"),
]


@pytest.mark.usefixtures("aws", "home")
@pytest.mark.parametrize(("argv", "flag"), BAD_INPUTS, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD_INPUTS)])
def test_bad_input_exits_2_and_creates_nothing(argv: list[str], flag: str, capsys: pytest.CaptureFixture[str],
                                               bundle: Path, recorded: list[tuple[str, str]]) -> None:
    plain = bundle.parent / "plain.txt"
    plain.write_text("echo no shebang\n")
    argv = [str(plain) if a == "PLAIN" else arm_ami() if a == "ARM" else a for a in argv]
    before = inventory()
    recorded.clear()
    if "--agent-bundle" not in argv:
        argv += ["--agent-bundle", str(bundle)]
    if "--region" not in argv:
        argv += ["--region", REGION]
    code, _out, err = spawn(capsys, "launch", *argv)
    assert code == 2, err
    assert flag in err
    assert [op for _svc, op in recorded if op.startswith(WRITE_PREFIXES)] == []
    assert inventory() == before


@pytest.mark.usefixtures("aws", "home")
def test_human_summary_says_what_to_do_next(capsys: pytest.CaptureFixture[str], bundle: Path) -> None:
    code, out, err = spawn(capsys, "launch", "-t", "t3.micro", "--ttl", "45m", "--name", "summary",
                           "--agent-bundle", str(bundle), "--no-wait", "--region", REGION)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("launched 1 instance 'summary' (t3.micro, ami-")
    iid = lines[1].split()[0]
    assert iid.startswith("i-") and "running" in lines[1]
    assert any(line.startswith("deadline: ") and "then terminate" in line for line in lines)
    assert f"connect: spawn connect {iid} --region {REGION} (as ec2-user)" in lines
    assert any(line.startswith("cost: ~$0.0104/h (ESTIMATE") for line in lines)
    assert "validate:" in err and "running: done" in err  # plain progress lines off a terminal


@pytest.mark.usefixtures("aws", "home")
def test_uploaded_bundle_is_fetched_through_a_sigv4_presigned_url(capsys: pytest.CaptureFixture[str],
                                                                  bundle: Path) -> None:
    import requests

    code, out, err = spawn(capsys, "launch", "-t", "t3.micro", "--ttl", "1h", "--agent-bundle", str(bundle),
                           "--dry-run", "--json", "--region", REGION)
    assert code == 0, err
    url = json.loads(out)["agent_bundle"]["url"]
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "X-Amz-Expires=7200" in url
    code, out, err = spawn(capsys, "launch", "-t", "t3.micro", "--ttl", "1h", "--agent-bundle", str(bundle),
                           "--no-wait", "--json", "--region", REGION)
    assert code == 0, err
    install = user_data_parts(json.loads(out)["instances"][0]["instance_id"])[0][2].decode()
    fetched = base64.b64decode(install.split("BUNDLE_URL_B64='")[1].split("'")[0]).decode()
    body = requests.get(fetched, timeout=10).content  # what the instance's curl would download
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(bundle.read_bytes()).hexdigest()
    s3 = boto3.client("s3", region_name=REGION)
    bucket = urlsplit(fetched).path.split("/")[1]
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())


@contextlib.contextmanager
def checkip_answering(body: str) -> Iterator[str]:
    """A local stand-in for https://checkip.amazonaws.com (the launch must not reach the internet)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _ingress(instance_id: str) -> list[tuple[str, int, int, list[str], list[str]]]:
    inst = ec2().describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    group_ids = [g["GroupId"] for g in inst["SecurityGroups"]]
    groups = ec2().describe_security_groups(GroupIds=group_ids)["SecurityGroups"]
    return [(p["IpProtocol"], p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p.get("IpRanges", [])],
             [r["CidrIpv6"] for r in p.get("Ipv6Ranges", [])]) for g in groups for p in g["IpPermissions"]]


@pytest.mark.usefixtures("aws", "home")
def test_ssh_is_open_only_to_the_callers_own_address_by_default(
        capsys: pytest.CaptureFixture[str], bundle: Path, ssh_key: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    with checkip_answering("198.51.100.23\n") as url:
        monkeypatch.setenv("SPAWN_CHECKIP_URL", url)
        code, out, err = spawn(capsys, "launch", "-t", "t3.micro", "--ttl", "1h", "--ssh-key", str(ssh_key),
                               "--agent-bundle", str(bundle), "--no-wait", "--json", "--region", REGION)
    assert code == 0, err
    assert _ingress(json.loads(out)["instances"][0]["instance_id"]) == [
        ("tcp", 22, 22, ["198.51.100.23/32"], [])]
    assert "0.0.0.0/0" not in err


@pytest.mark.usefixtures("aws", "home")
def test_a_failed_address_lookup_stops_before_anything_is_created(
        capsys: pytest.CaptureFixture[str], bundle: Path, ssh_key: Path,
        recorded: list[tuple[str, str]]) -> None:
    before = inventory()
    recorded.clear()
    # SPAWN_CHECKIP_URL is a loopback port that refuses (tests/conftest.py)
    code, _out, err = spawn(capsys, "launch", "-t", "t3.micro", "--ttl", "1h", "--ssh-key", str(ssh_key),
                            "--agent-bundle", str(bundle), "--no-wait", "--region", REGION)
    assert code == 2, err
    assert "--ssh-from" in err and "could not look up your public IPv4 address" in err
    assert [op for _svc, op in recorded if op.startswith(WRITE_PREFIXES)] == []
    assert inventory() == before


@pytest.mark.usefixtures("aws", "home")
def test_ssh_from_everyone_only_when_asked_and_warned(capsys: pytest.CaptureFixture[str], bundle: Path,
                                                      ssh_key: Path) -> None:
    code, out, err = spawn(capsys, "launch", "-t", "t3.micro", "--ttl", "1h", "--ssh-key", str(ssh_key),
                           "--ssh-from", "0.0.0.0/0", "--agent-bundle", str(bundle), "--no-wait", "--json",
                           "--region", REGION)
    assert code == 0, err
    assert "SSH open to everyone (0.0.0.0/0)" in err
    assert _ingress(json.loads(out)["instances"][0]["instance_id"]) == [("tcp", 22, 22, ["0.0.0.0/0"], [])]
