"""Lifecycle commands against the moto server: list, status, extend, stop/start/hibernate,
terminate, config, connect - through the API and tags only, and only on managed instances."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from controller import aws as controller_aws
from controller.cli import main
from spored.contract import format_timestamp, parse_duration, parse_timestamp
from tests.conftest import MotoServer

# one moto state for the module (a module-scoped fixture): its tests stay on one xdist worker
pytestmark = pytest.mark.xdist_group("test_lifecycle_commands")

EAST, WEST = "us-east-1", "eu-west-1"


@pytest.fixture(autouse=True)
def home(cloud: MotoServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)


def ec2(region: str = EAST) -> Any:
    return boto3.client("ec2", region_name=region)


def image(region: str) -> str:
    name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
    return str(boto3.client("ssm", region_name=region).get_parameter(Name=name)["Parameter"]["Value"])


def make(name: str, *, region: str = EAST, managed: bool = True, extra: dict[str, str] | None = None,
         hibernate: bool = False) -> str:
    """An instance as spawn launch leaves it (tags set at creation)."""
    tags = {"Name": name, **(extra or {})}
    if managed:
        tags["spawn:managed"] = "true"
    kwargs: dict[str, Any] = {}
    if hibernate:
        kwargs["HibernationOptions"] = {"Configured": True}
    resp = ec2(region).run_instances(
        ImageId=image(region), InstanceType="t3.micro", MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}], **kwargs)
    return str(resp["Instances"][0]["InstanceId"])


def tags(iid: str, region: str = EAST) -> dict[str, str]:
    inst = ec2(region).describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}


def state(iid: str, region: str = EAST) -> str:
    inst = ec2(region).describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return str(inst["State"]["Name"])


def spawn(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def in_hours(hours: float) -> str:
    return format_timestamp(datetime.now(UTC) + timedelta(hours=hours))


def close(a: str, b: datetime, seconds: int = 10) -> bool:
    return abs((parse_timestamp(a) - b).total_seconds()) <= seconds


def test_list_shows_managed_instances_in_every_region_asked(capsys: pytest.CaptureFixture[str]) -> None:
    a = make("list-a", extra={"spawn:expires-at": in_hours(2), "spawn:idle-timeout": "30m",
                              "spawn:agent-status": "ok 2026-11-28T00:00:00Z"})
    b = make("list-b", region=WEST, extra={"spawn:ttl": "3h"})
    stranger = make("list-stranger", managed=False)
    code, out, err = spawn(capsys, "list", "--region", f"{EAST},{WEST}", "--json")
    assert code == 0, err
    rows = {r["instance_id"]: r for r in json.loads(out)["instances"]}
    assert stranger not in rows
    assert rows[a]["region"] == EAST and rows[b]["region"] == WEST
    assert rows[a]["idle_timeout"] == "30m" and rows[a]["agent"] == "ok 2026-11-28T00:00:00Z"
    # time left: what was set minus the test's own run time (minutes on a loaded CI machine)
    assert timedelta(0) < timedelta(hours=2) - parse_duration(rows[a]["time_left"]) < timedelta(minutes=10)
    assert timedelta(0) < timedelta(hours=3) - parse_duration(rows[b]["time_left"]) < timedelta(minutes=10)
    assert rows[b]["deadline"] is not None

    code, out, _ = spawn(capsys, "list", "--region", EAST)  # plain table when not a terminal
    lines = out.splitlines()
    assert lines[0].split("\t")[:4] == ["instance id", "name", "type", "state"]
    assert any(line.startswith(a + "\t") for line in lines)


def test_a_failing_region_is_reported_not_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    make("fail-east")

    def broken_west(**kwargs: Any) -> None:
        if kwargs["request_signer"].region_name == WEST:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}},
                              "DescribeInstances")

    events = controller_aws.session().events
    events.register("before-call.ec2.DescribeInstances", broken_west)
    try:
        code, out, err = spawn(capsys, "list", "--region", EAST, "--region", WEST, "--json")
    finally:
        events.unregister("before-call.ec2.DescribeInstances", broken_west)
    assert code == 4
    result = json.loads(out)
    assert list(result["failed_regions"]) == [WEST]
    assert "RequestLimitExceeded" in result["failed_regions"][WEST]
    assert any(r["region"] == EAST for r in result["instances"])
    assert f"region {WEST} could not be listed" in err


def test_status_by_name_gives_the_full_picture(capsys: pytest.CaptureFixture[str]) -> None:
    iid = make("status-me", extra={"spawn:ttl": "2h", "spawn:on-complete": "stop",
                                   "spawn:launched-by": "arn:aws:iam::123456789012:user/alice"})
    code, out, err = spawn(capsys, "status", "status-me", "--region", EAST, "--json")
    assert code == 0, err
    st = json.loads(out)
    assert st["instance_id"] == iid and st["state"] == "running"
    assert st["deadline_source"] == "launch time + spawn:ttl" and st["on_complete"] == "stop"
    assert st["launched_by"].endswith("user/alice") and st["lifecycle_tags"]["spawn:ttl"] == "2h"


def test_extend_relative_and_absolute(capsys: pytest.CaptureFixture[str]) -> None:
    deadline = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    iid = make("extend-me", extra={"spawn:expires-at": format_timestamp(deadline)})
    code, _, err = spawn(capsys, "extend", iid, "+2h", "--region", EAST)
    assert code == 0, err
    assert tags(iid)["spawn:expires-at"] == format_timestamp(deadline + timedelta(hours=2))
    code, _, err = spawn(capsys, "extend", "extend-me", "4h", "--region", EAST)
    assert code == 0, err
    assert close(tags(iid)["spawn:expires-at"], datetime.now(UTC) + timedelta(hours=4))


def test_extend_warns_when_the_deadline_it_moves_is_seconds_away(capsys: pytest.CaptureFixture[str]) -> None:
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    iid = make("extend-late", extra={"spawn:expires-at": format_timestamp(soon)})
    code, out, err = spawn(capsys, "extend", iid, "+1h", "--region", EAST, "--json")
    assert code == 0, err
    assert "may already have acted" in json.loads(out)["warning"]
    code, out, err = spawn(capsys, "extend", iid, "+1h", "--region", EAST)
    assert code == 0, err
    assert "warning:" not in out  # the deadline is an hour away now
    late = make("extend-late-human", extra={"spawn:expires-at": format_timestamp(soon)})
    code, out, err = spawn(capsys, "extend", late, "+1h", "--region", EAST)
    assert code == 0 and "warning: the previous deadline" in out


def test_stop_keeps_the_remaining_ttl_and_start_rearms_it(capsys: pytest.CaptureFixture[str]) -> None:
    iid = make("pause-me", extra={"spawn:expires-at": in_hours(3)})
    code, out, err = spawn(capsys, "stop", iid, "--region", EAST, "--json")
    assert code == 0, err
    remaining = json.loads(out)["ttl_remaining"]
    t = tags(iid)
    assert "spawn:expires-at" not in t and t["spawn:ttl-remaining"] == remaining
    assert abs(parse_duration(remaining) - timedelta(hours=3)) < timedelta(seconds=10)
    assert state(iid) in {"stopping", "stopped"}
    ec2().get_waiter("instance_stopped").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1, "MaxAttempts": 10})

    # paused: the remaining TTL grows
    code, out, err = spawn(capsys, "extend", iid, "+1h", "--region", EAST, "--json")
    assert code == 0, err
    assert parse_duration(tags(iid)["spawn:ttl-remaining"]) == parse_duration(remaining) + timedelta(hours=1)

    code, out, err = spawn(capsys, "start", iid, "--region", EAST, "--json")
    assert code == 0, err
    t = tags(iid)
    assert "spawn:ttl-remaining" not in t
    assert close(t["spawn:expires-at"], datetime.now(UTC) + parse_duration(remaining) + timedelta(hours=1))


def test_hibernate_needs_hibernation_at_launch(capsys: pytest.CaptureFixture[str]) -> None:
    plain = make("no-hib", extra={"spawn:ttl": "1h"})
    code, _, err = spawn(capsys, "hibernate", plain, "--region", EAST)
    assert code == 2 and "not launched with hibernation" in err
    assert state(plain) == "running" and "spawn:ttl-remaining" not in tags(plain)
    hib = make("hib", hibernate=True, extra={"spawn:expires-at": in_hours(1)})
    code, out, err = spawn(capsys, "hibernate", hib, "--region", EAST, "--json")
    assert code == 0, err
    assert json.loads(out)["action"] == "hibernate" and "spawn:ttl-remaining" in tags(hib)


def test_terminate_needs_confirmation_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    one, two = make("term-1"), make("term-2")
    code, _, err = spawn(capsys, "terminate", one, "term-2", "--region", EAST)
    assert code == 2 and "--yes" in err
    assert state(one) == state(two) == "running"
    code, out, err = spawn(capsys, "terminate", one, "term-2", "--yes", "--region", EAST, "--json")
    assert code == 0, err
    assert {r["instance_id"] for r in json.loads(out)["terminated"]} == {one, two}
    assert state(one) in {"shutting-down", "terminated"} and state(two) in {"shutting-down", "terminated"}


def test_config_get_set_list_validated(capsys: pytest.CaptureFixture[str]) -> None:
    iid = make("conf-me", extra={"spawn:idle-timeout": "1h"})
    code, _, err = spawn(capsys, "config", iid, "set", "idle-timeout", "90m", "--region", EAST)
    assert code == 0, err
    assert tags(iid)["spawn:idle-timeout"] == "1h30m"
    code, out, _ = spawn(capsys, "config", iid, "get", "spawn:idle-timeout", "--region", EAST)
    assert out.strip() == "1h30m"
    code, _, err = spawn(capsys, "config", iid, "set", "idle-timeout", "90 minutes", "--region", EAST)
    assert code == 2 and "spawn:idle-timeout" in err
    code, _, err = spawn(capsys, "config", iid, "set", "managed", "false", "--region", EAST)
    assert code == 2 and "not a lifecycle setting" in err
    code, _, err = spawn(capsys, "config", iid, "set", "on-complete", "hibernate", "--region", EAST)
    assert code == 2 and "hibernation" in err
    assert tags(iid)["spawn:idle-timeout"] == "1h30m" and tags(iid)["spawn:managed"] == "true"
    code, out, _ = spawn(capsys, "config", iid, "list", "--region", EAST, "--json")
    settings = json.loads(out)["settings"]
    assert settings["spawn:idle-timeout"] == "1h30m" and settings["spawn:ttl"] is None


def test_config_set_ttl_moves_the_deadline_with_it(capsys: pytest.CaptureFixture[str]) -> None:
    iid = make("conf-ttl", extra={"spawn:ttl": "1h", "spawn:expires-at": in_hours(1)})
    code, _, err = spawn(capsys, "config", iid, "set", "ttl", "5h", "--region", EAST)
    assert code == 0, err
    assert close(tags(iid)["spawn:expires-at"], datetime.now(UTC) + timedelta(hours=5), seconds=60)


def test_connect_builds_a_host_key_checked_ssh_command(capsys: pytest.CaptureFixture[str]) -> None:
    iid = make("ssh-me")
    code, out, err = spawn(capsys, "connect", "ssh-me", "--region", EAST, "--json", "--command", "uptime -p")
    assert code == 0, err
    result = json.loads(out)
    argv = result["argv"]
    assert argv[0] == "ssh" and f"HostKeyAlias={iid}" in argv
    assert "StrictHostKeyChecking=accept-new" in argv  # moto's console output carries no host keys
    assert not any(a.endswith("StrictHostKeyChecking=no") for a in argv)
    assert argv[-4].startswith("ec2-user@") and argv[-3:] == ["--", "uptime", "-p"]
    assert result["known_hosts"].endswith(".config/spawn/known_hosts")


@pytest.mark.parametrize("argv", [
    ["status", "REF"], ["extend", "REF", "+1h"], ["stop", "REF"], ["terminate", "REF", "--yes"],
    ["config", "REF", "set", "ttl", "1h"], ["connect", "REF", "--print"],
])
def test_unmanaged_instances_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    stranger = make("not-ours", managed=False, extra={"spawn:ttl": "1h"})
    before = tags(stranger)
    code, _, err = spawn(capsys, *[stranger if a == "REF" else a for a in argv], "--region", EAST)
    assert code == 2 and "not managed by spawn" in err
    assert state(stranger) == "running" and tags(stranger) == before


@pytest.mark.parametrize("value", ["TRUE", "true ", "yes"])
def test_a_managed_tag_other_than_exactly_true_is_refused(value: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    almost = make(f"almost-{value.strip()}", managed=False, extra={"spawn:managed": value, "spawn:ttl": "1h"})
    before = tags(almost)
    code, _, err = spawn(capsys, "extend", almost, "+1h", "--region", EAST)
    assert code == 2 and "not managed by spawn" in err and repr(value) in err
    assert tags(almost) == before


def test_config_set_refuses_an_expires_at_beyond_366_days(capsys: pytest.CaptureFixture[str]) -> None:
    iid = make("conf-far", extra={"spawn:expires-at": in_hours(1)})
    before = tags(iid)
    code, out, err = spawn(capsys, "config", iid, "set", "expires-at", "3000-01-01T00:00:00Z", "--region",
                           EAST, "--json")
    assert code == 2
    assert "spawn:expires-at" in err and "366 days" in err and "accepted" in err
    assert json.loads(out)["error"] == "validation"
    assert tags(iid) == before


def test_names_resolve_across_regions_and_ambiguity_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    far = make("far-away", region=WEST)
    code, out, err = spawn(capsys, "status", "far-away", "--region", f"{EAST},{WEST}", "--json")
    assert code == 0, err
    assert json.loads(out)["instance_id"] == far and json.loads(out)["region"] == WEST
    make("twin")
    make("twin", region=WEST)
    code, _, err = spawn(capsys, "status", "twin", "--region", f"{EAST},{WEST}")
    assert code == 2 and "matches 2 instances" in err
    code, _, err = spawn(capsys, "status", "nobody-by-this-name", "--region", EAST)
    assert code == 2 and "no instance" in err
    code, _, err = spawn(capsys, "extend", "i-nothex", "+1h", "--region", EAST)
    assert code == 2 and "not an instance id" in err


def test_without_region_every_enabled_region_is_searched(capsys: pytest.CaptureFixture[str]) -> None:
    far = make("across-the-world", region="ap-south-1")
    code, out, err = spawn(capsys, "status", "across-the-world", "--json")
    assert code == 0, err
    assert (json.loads(out)["instance_id"], json.loads(out)["region"]) == (far, "ap-south-1")
    code, out, err = spawn(capsys, "list", "--all-regions", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert len(listed["regions"]) > 10 and listed["failed_regions"] == {}
    assert far in {r["instance_id"] for r in listed["instances"]}


@pytest.mark.usefixtures("shutdown_behaviour_modelled")
def test_config_set_on_complete_also_sets_the_shutdown_behaviour(capsys: pytest.CaptureFixture[str]) -> None:
    """An OS power-off (the fallback ladder, the failsafe) must keep meaning the lifecycle's action."""
    iid = make("shutdown-behaviour", extra={"spawn:on-complete": "terminate"})
    ec2().modify_instance_attribute(InstanceId=iid, InstanceInitiatedShutdownBehavior={"Value": "terminate"})

    def behaviour() -> str:
        attr = ec2().describe_instance_attribute(InstanceId=iid,
                                                 Attribute="instanceInitiatedShutdownBehavior")
        return str(attr["InstanceInitiatedShutdownBehavior"]["Value"])

    code, out, err = spawn(capsys, "config", iid, "set", "on-complete", "stop", "--json")
    assert code == 0, err
    assert json.loads(out)["shutdown_behaviour"] == "stop" and behaviour() == "stop"
    assert tags(iid)["spawn:on-complete"] == "stop"
    code, out, err = spawn(capsys, "config", iid, "set", "spawn:on-complete", "terminate")
    assert code == 0, err
    assert behaviour() == "terminate" and "shutdown behaviour = terminate" in out


def test_status_and_list_show_a_denial_from_the_console_when_no_tag_was_written(
        capsys: pytest.CaptureFixture[str], console_outputs: dict[str, str]) -> None:
    iid = make("denied-console", extra={"spawn:ttl": "3h"})
    console_outputs[iid] = ("boot noise\n[   9.1] spored[700]: spored: permissions ok: "
                            "ec2:TerminateInstances,ec2:CreateTags\n[  99.0] spored[700]: spored: "
                            "permissions denied: ec2:TerminateInstances,ec2:CreateTags\n")
    code, out, err = spawn(capsys, "status", iid, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["agent_permissions"] == {"verdict": "denied", "source": "console output",
                                          "actions": ["ec2:TerminateInstances", "ec2:CreateTags"]}
    assert shown["agent"] == "permissions denied: ec2:TerminateInstances,ec2:CreateTags (from the console)"
    code, out, err = spawn(capsys, "list", "--json")
    assert code == 0, err
    row = next(r for r in json.loads(out)["instances"] if r["instance_id"] == iid)
    assert row["agent"] == shown["agent"]
    code, out, err = spawn(capsys, "status", iid)
    assert "agent: permissions denied: ec2:TerminateInstances,ec2:CreateTags" in out


def test_status_shows_a_denial_from_the_status_tag(capsys: pytest.CaptureFixture[str]) -> None:
    value = "degraded 2026-11-28T10:00:00Z permissions denied: ec2:StopInstances"
    iid = make("denied-tag", extra={"spawn:agent-status": value})
    code, out, err = spawn(capsys, "status", iid, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["agent"] == value
    assert shown["agent_permissions"] == {"verdict": "denied", "source": "status tag",
                                          "actions": ["ec2:StopInstances"]}
