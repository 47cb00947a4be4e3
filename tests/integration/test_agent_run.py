"""`spored run` as a real subprocess against the IMDS emulator and the moto server.

The agent gets no static AWS credentials: boto3 in the child finds them through the emulator's
``iam/security-credentials`` (AWS_EC2_METADATA_SERVICE_ENDPOINT), and reaches moto only through
AWS_ENDPOINT_URL. Intervals are short through a tmp config file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from controller.sandbox.imds_emulator import ImdsEmulator
from spored.contract import TAG_AGENT_STATUS, format_timestamp, parse_timestamp
from tests.conftest import MotoServer

REGION = "us-east-1"
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
CHILD_DROPS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
               "AWS_EC2_METADATA_DISABLED", "AWS_REGION", "AWS_DEFAULT_REGION", "NOTIFY_SOCKET")

BASE_CONFIG = """
tick = "1s"
spot_poll = "1s"
tag_refresh = "1s"
tag_refresh_api = "2s"
completion_delay = "2s"
boot_grace = "1s"
wall = false
warn_at = ["3s"]
"""


def ec2() -> Any:
    return boto3.client("ec2", region_name=REGION)


def launch(tags: dict[str, str], *, metadata_tags: bool = True, spot: bool = False) -> str:
    iam = boto3.client("iam")
    try:
        iam.create_role(RoleName="spored-role", Path="/spawn/", AssumeRolePolicyDocument=TRUST)
        iam.create_instance_profile(InstanceProfileName="spored-profile", Path="/spawn/")
        iam.add_role_to_instance_profile(InstanceProfileName="spored-profile", RoleName="spored-role")
    except iam.exceptions.EntityAlreadyExistsException:
        pass  # a second instance in the same test
    resp = ec2().run_instances(
        ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="t3.micro",
        IamInstanceProfile={"Name": "spored-profile"},
        MetadataOptions={"HttpTokens": "required",
                         "InstanceMetadataTags": "enabled" if metadata_tags else "disabled"},
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
        **({"InstanceMarketOptions": {"MarketType": "spot"}} if spot else {}))
    return str(resp["Instances"][0]["InstanceId"])


def state_of(instance_id: str) -> str:
    res = ec2().describe_instances(InstanceIds=[instance_id])["Reservations"][0]
    return str(res["Instances"][0]["State"]["Name"])


def in_seconds(seconds: float) -> datetime:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0) + timedelta(seconds=1)


@dataclass
class Agent:
    proc: subprocess.Popen[bytes]
    log_path: Path
    runtime: Path
    state: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == event]

    def wait_for(self, event: str, timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = self.named(event)
            if found:
                return found[0]
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no {event!r} within {timeout}s; log:\n{self.log_path.read_text()[-4000:]}")

    def status(self) -> dict[str, Any]:
        return dict(json.loads((self.runtime / "status.json").read_text()))


@pytest.fixture
def run_agent(aws: MotoServer, tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    agents: list[Agent] = []

    def start(emulator: ImdsEmulator, extra_config: str = "", *, name: str = "agent",
              ec2_endpoint: str | None = None, state_dir: Path | None = None,
              env_extra: dict[str, str] | None = None) -> Agent:
        cfg = tmp_path / "spored.toml"
        cfg.write_text(BASE_CONFIG)
        (tmp_path / "spored.d").mkdir(exist_ok=True)
        (tmp_path / "spored.d" / "50-test.toml").write_text(extra_config)
        env = {k: v for k, v in os.environ.items() if k not in CHILD_DROPS}
        env.update({
            "AWS_ENDPOINT_URL": ec2_endpoint or aws.url,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": emulator.url,
            "STATE_DIRECTORY": str(state_dir or tmp_path / "state"),
            "RUNTIME_DIRECTORY": str(tmp_path / "run"),
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            **(env_extra or {}),
        })
        (tmp_path / "run").mkdir(exist_ok=True, mode=0o750)
        log_path = tmp_path / f"{name}.log"
        with log_path.open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "spored.cli", "--config", str(cfg), "run"],
                                    env=env, stdout=out, stderr=subprocess.STDOUT)
        agent = Agent(proc, log_path, tmp_path / "run", tmp_path / "state")
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait(timeout=10)


@pytest.fixture
def emulator_for(aws: MotoServer) -> Iterator[Callable[[str], ImdsEmulator]]:
    emulators: list[ImdsEmulator] = []

    def make(instance_id: str) -> ImdsEmulator:
        emu = ImdsEmulator(instance_id, REGION, aws.url).start()
        emulators.append(emu)
        return emu

    yield make
    for emu in emulators:
        emu.stop()


def wait_state(instance_id: str, wanted: set[str], timeout: float) -> float | None:
    """Time (epoch) at which the instance was first seen in ``wanted``, or None."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if state_of(instance_id) in wanted:
            return time.time()
        time.sleep(0.25)
    return None


def set_deadline(instance_id: str, seconds: float) -> datetime:
    """``spawn extend`` through the EC2 API: a new spawn:expires-at ``seconds`` from now."""
    deadline = in_seconds(seconds)
    ec2().create_tags(Resources=[instance_id],
                      Tags=[{"Key": "spawn:expires-at", "Value": format_timestamp(deadline)}])
    return deadline


def wait_status(agent: Agent, key: str, value: object, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (agent.runtime / "status.json").exists() and agent.status().get(key) == value:
            return
        time.sleep(0.1)
    raise AssertionError(f"status {key} never became {value}: {agent.log_path.read_text()[-3000:]}")


def started(agent: Agent) -> None:
    """The agent made its first complete observation (its READY point) with the identity known."""
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if (agent.runtime / "status.json").exists() and agent.status().get("instance_id"):
            return
        if agent.proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(agent.log_path.read_text()[-3000:])


def agent_status_tag(instance_id: str) -> str | None:
    tags = ec2().describe_tags(Filters=[{"Name": "resource-id", "Values": [instance_id]},
                                        {"Name": "key", "Values": [TAG_AGENT_STATUS]}])["Tags"]
    return str(tags[0]["Value"]) if tags else None


def wait_agent_status(agent: Agent, instance_id: str, state: str, timeout: float) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = agent_status_tag(instance_id)
        if value is not None and value.startswith(f"{state} "):
            return value
        time.sleep(0.2)
    raise AssertionError(f"{TAG_AGENT_STATUS} never became {state!r} (last "
                         f"{agent_status_tag(instance_id)!r}): {agent.log_path.read_text()[-3000:]}")


ENDED = {"shutting-down", "terminated"}


# ----------------------------------------------------------------------------------------------
def test_ttl_expiry_terminates_within_2s_of_the_deadline(emulator_for: Callable[[str], ImdsEmulator],
                                                         run_agent: Callable[..., Agent]) -> None:
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    agent = run_agent(emulator_for(iid))
    started(agent)
    deadline = set_deadline(iid, 5)
    seen = wait_state(iid, ENDED, timeout=15)
    assert seen is not None, agent.log_path.read_text()[-3000:]
    assert seen - deadline.timestamp() <= 2.0
    call = agent.named("action.start")[0]
    lag = datetime.fromisoformat(call["timestamp"].replace("Z", "+00:00")) - deadline
    assert timedelta(0) <= lag <= timedelta(seconds=2)
    # credentials came from the emulator, and the calls are the declared ones
    ops = {e["operation"] for e in agent.named("aws.call")}
    assert ops <= {"DescribeTags", "TerminateInstances", "CreateTags"} and "TerminateInstances" in ops
    assert agent.named("warning"), "a warning precedes the action"
    assert (agent.runtime / "warning").exists()


def test_a_metadata_hiccup_at_the_deadline_delays_the_action_by_seconds_not_a_tick(
        emulator_for: Callable[[str], ImdsEmulator], run_agent: Callable[..., Agent]) -> None:
    """The fresh tag read right before the action fails (connection dropped): the action is
    deferred, and tried again within seconds rather than at the next tick (30 s here)."""
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    emu = emulator_for(iid)
    agent = run_agent(emu, 'tick = "30s"\ntag_refresh = "1h"\n')
    # started, with room for a slow first identity read (retried at the 30 s tick)
    end = time.monotonic() + 120
    while time.monotonic() < end and not (
            (agent.runtime / "status.json").exists() and agent.status().get("instance_id")):
        time.sleep(0.2)
    started(agent)
    deadline = set_deadline(iid, 8)
    agent.proc.send_signal(signal.SIGHUP)  # re-read the tags now
    wait_status(agent, "deadline", format_timestamp(deadline))
    time.sleep(max(0.0, deadline.timestamp() - 3 - time.time()))
    emu.faults.set(drop=1_000_000)  # every metadata request fails: the re-reads around the deadline
    agent.wait_for("action.deferred", timeout=30)
    emu.faults.set(drop=0)
    healed = datetime.now(UTC)
    # (whether TerminateInstances then succeeds depends on credentials fetched during the outage:
    # other tests cover the call; this one is about when the agent tries again)
    tried = agent.wait_for("action.start", timeout=40)
    at = datetime.fromisoformat(tried["timestamp"].replace("Z", "+00:00"))
    assert at - healed <= timedelta(seconds=10)  # the next tick would have been up to 30 s later


@pytest.mark.parametrize("managed", [None, "false", "TRUE-ish"])
def test_unmanaged_is_never_terminated(emulator_for: Callable[[str], ImdsEmulator],
                                       run_agent: Callable[..., Agent], managed: str | None) -> None:
    tags = {"spawn:expires-at": format_timestamp(in_seconds(1))}
    if managed is not None:
        tags["spawn:managed"] = managed
    iid = launch(tags)
    agent = run_agent(emulator_for(iid))
    started(agent)
    time.sleep(4)
    assert state_of(iid) == "running"
    assert not agent.named("action.start")
    assert agent.status()["managed"] is False
    assert agent_status_tag(iid) is None  # never written on an instance that is not managed


def test_agent_status_tag_is_written_at_start_and_on_a_change(
        emulator_for: Callable[[str], ImdsEmulator], run_agent: Callable[..., Agent]) -> None:
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    agent = run_agent(emulator_for(iid))
    started(agent)
    ready = wait_agent_status(agent, iid, "ready", timeout=15)
    since = parse_timestamp(ready.split(" ", 1)[1])
    assert abs((datetime.now(UTC) - since).total_seconds()) < 30
    assert agent.status()["boto3_loaded"] is False  # the write ran in a child process
    set_deadline(iid, 6)  # warn_at = 3s: a warning, then the action
    warning = wait_agent_status(agent, iid, "warning", timeout=10)
    written = [e["value"] for e in agent.named("status_tag.written")]
    assert written[:2] == [ready, warning]  # one write per change, nothing in between
    assert {e["instance_id"] for e in agent.named("status_tag.written")} == {iid}


def test_extend_through_the_api_moves_the_deadline(emulator_for: Callable[[str], ImdsEmulator],
                                                   run_agent: Callable[..., Agent]) -> None:
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    agent = run_agent(emulator_for(iid))
    started(agent)
    first = set_deadline(iid, 8)
    wait_status(agent, "deadline", format_timestamp(first))
    later = first + timedelta(seconds=6)
    ec2().create_tags(Resources=[iid], Tags=[{"Key": "spawn:expires-at", "Value": format_timestamp(later)}])
    # tags are in metadata: the agent sees the change within one refresh (1 s here)
    wait_status(agent, "deadline", format_timestamp(later))
    time.sleep(max(0.0, first.timestamp() + 2 - time.time()))
    assert state_of(iid) == "running", agent.log_path.read_text()[-3000:]
    seen = wait_state(iid, ENDED, timeout=15)
    assert seen is not None and seen - later.timestamp() <= 2.0


def test_extend_is_honoured_when_tags_come_from_the_api(
        emulator_for: Callable[[str], ImdsEmulator], run_agent: Callable[..., Agent]) -> None:
    """Tags not in metadata, hourly refresh: the re-read right before the deadline sees the extension."""
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"}, metadata_tags=False)
    agent = run_agent(emulator_for(iid), 'tag_refresh_api = "1h"\n')
    started(agent)
    first = set_deadline(iid, 8)
    agent.proc.send_signal(signal.SIGHUP)  # SIGHUP re-reads tags at once
    wait_status(agent, "deadline", format_timestamp(first))
    set_deadline(iid, 3600)  # the agent's own refresh is an hour away
    time.sleep(max(0.0, first.timestamp() + 3 - time.time()))
    assert state_of(iid) == "running", agent.log_path.read_text()[-3000:]
    assert not agent.named("action.start")
    ops = [e["operation"] for e in agent.named("aws.call") if not e.get("dry_run")]  # not the proof
    assert "DescribeTags" in ops and set(ops) <= {"DescribeTags", "CreateTags"}  # CreateTags: agent-status


def test_spot_notice_starts_the_hook_within_2s(emulator_for: Callable[[str], ImdsEmulator],
                                               run_agent: Callable[..., Agent], tmp_path: Path) -> None:
    marker = tmp_path / "hook-ran"
    hook = tmp_path / "pre-stop.sh"
    hook.write_text(f'#!/bin/sh\necho "$(date +%s.%N) $SPORED_REASON" > {marker}.tmp\n'
                    f'mv {marker}.tmp {marker}\n')
    hook.chmod(0o755)
    iid = launch({"spawn:managed": "true", "spawn:ttl": "2h"}, spot=True)
    emu = emulator_for(iid)
    agent = run_agent(emu, f'pre_stop_hook = "{hook}"\n')
    started(agent)
    armed = time.time()
    emu.arm_spot("terminate", datetime.now(UTC) + timedelta(minutes=2))
    end = time.monotonic() + 5
    while not marker.exists() and time.monotonic() < end:
        time.sleep(0.05)
    assert marker.exists(), agent.log_path.read_text()[-3000:]
    hook_start, reason = marker.read_text().split()
    assert float(hook_start) - armed <= 2.0
    assert reason == "spot-interruption"
    time.sleep(2.5)  # more polls of the same notice: de-duplicated
    assert len(agent.named("hook.started")) == 1
    assert state_of(iid) == "running"  # AWS reclaims, not the agent


def test_notices_are_polled_only_on_a_spot_instance(emulator_for: Callable[[str], ImdsEmulator],
                                                     run_agent: Callable[..., Agent]) -> None:
    """AWS sends interruption notices and rebalance recommendations to Spot Instances only: an
    on-demand agent reads its instance-life-cycle once and never polls them."""
    notice_paths = ("/latest/meta-data/spot/instance-action",
                    "/latest/meta-data/events/recommendations/rebalance")

    def count(emu: ImdsEmulator, *paths: str) -> int:
        return sum(emu.log.count(method="GET", path=p) for p in paths)

    def until(predicate: Callable[[], bool]) -> None:
        end = time.monotonic() + 60
        while not predicate() and time.monotonic() < end:
            time.sleep(0.2)
        assert predicate()

    on_demand = emulator_for(launch({"spawn:managed": "true", "spawn:ttl": "2h"}))
    agent = run_agent(on_demand, name="on-demand")
    started(agent)
    # tags are re-read every second (BASE_CONFIG): four re-reads = seconds of a running agent
    until(lambda: count(on_demand, "/latest/meta-data/tags/instance") >= 5)
    assert agent.named("life_cycle")[0]["value"] == "on-demand"
    assert count(on_demand, *notice_paths) == 0
    assert count(on_demand, "/latest/meta-data/instance-life-cycle") == 1
    assert agent.status()["notice_poll"] is False
    agent.proc.terminate()
    agent.proc.wait(timeout=30)

    spot = emulator_for(launch({"spawn:managed": "true", "spawn:ttl": "2h"}, spot=True))
    agent = run_agent(spot, name="spot")
    started(agent)
    until(lambda: count(spot, *notice_paths) >= 6)  # spot_poll = 1 s: both paths, every second
    assert agent.named("life_cycle")[0]["value"] == "spot"
    assert agent.status()["notice_poll"] is True


def test_sigkill_and_restart_keep_the_same_deadline(emulator_for: Callable[[str], ImdsEmulator],
                                                    run_agent: Callable[..., Agent]) -> None:
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    emu = emulator_for(iid)
    first = run_agent(emu, name="first")
    started(first)
    time.sleep(1.5)
    before = first.status()["deadline"]
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=5)
    time.sleep(1.5)
    second = run_agent(emu, name="second")
    started(second)
    time.sleep(1.5)
    assert second.status()["deadline"] == before
    launch_time = ec2().describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["LaunchTime"]
    assert before == format_timestamp(launch_time + timedelta(hours=3))


def test_completion_acts_after_the_delay_and_consumes_the_marker(
        emulator_for: Callable[[str], ImdsEmulator], run_agent: Callable[..., Agent], tmp_path: Path) -> None:
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h", "spawn:on-complete": "stop"})
    marker = tmp_path / "run" / "complete"
    agent = run_agent(emulator_for(iid), f'completion_marker = "{marker}"\n')
    started(agent)
    env = {**os.environ, "RUNTIME_DIRECTORY": str(tmp_path / "run")}
    cfg = tmp_path / "spored.toml"
    signalled = time.time()  # `spored complete` returns once the agent recorded it: time it from the call
    done = subprocess.run([sys.executable, "-m", "spored.cli", "--config", str(cfg), "complete", "--json"],
                          env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["recorded_by_agent"] is True
    seen = wait_state(iid, {"stopping", "stopped"}, timeout=10)
    assert seen is not None, agent.log_path.read_text()[-3000:]
    assert 2.0 <= seen - signalled <= 5.0
    assert not marker.exists()
    assert agent.named("action.done")[0]["action"] == "stop"


def test_imds_faults_never_act_wrongly_and_enforcement_resumes(
        emulator_for: Callable[[str], ImdsEmulator], run_agent: Callable[..., Agent]) -> None:
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    emu = emulator_for(iid)
    agent = run_agent(emu)
    started(agent)
    deadline = set_deadline(iid, 10)
    emu.faults.set(fail_503=40, retry_after=1)
    time.sleep(2)
    emu.faults.set(drop=10)
    time.sleep(1)
    assert state_of(iid) == "running"
    emu.faults.set(fail_503=0, drop=0)
    seen = wait_state(iid, ENDED, timeout=15)
    assert seen is not None, agent.log_path.read_text()[-3000:]
    assert seen - deadline.timestamp() <= 3.0


def test_refused_ec2_endpoint_does_not_terminate_and_is_reported(
        emulator_for: Callable[[str], ImdsEmulator], run_agent: Callable[..., Agent], tmp_path: Path) -> None:
    """EC2 unreachable past the deadline, backstop on: a power-off request, never a wrong call."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    agent = run_agent(emulator_for(iid), 'backstop = true\nbackstop_after = "3s"\n', ec2_endpoint=dead)
    started(agent)
    set_deadline(iid, 2)
    agent.wait_for("action.failed", 30)
    agent.wait_for("backstop.poweroff_requested", 40)
    assert (agent.runtime / "private" / "poweroff").exists()  # in the agent's own 0700 directory
    assert state_of(iid) == "running"
    assert agent.status()["last_error"]


def test_sigterm_exits_cleanly_and_config_error_is_78(emulator_for: Callable[[str], ImdsEmulator],
                                                       run_agent: Callable[..., Agent]) -> None:
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    emu = emulator_for(iid)
    agent = run_agent(emu)
    started(agent)
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=10) == 0
    bad = run_agent(emu, 'no_such_key = "x"\n', name="bad")
    assert bad.proc.wait(timeout=30) == 78
    assert "no_such_key" in bad.log_path.read_text()


def test_an_unwritable_state_directory_is_reported_and_never_a_restart_loop(
        emulator_for: Callable[[str], ImdsEmulator], run_agent: Callable[..., Agent], tmp_path: Path) -> None:
    """The state store is a failing component, retried on every evaluation: the loop goes on (an
    exit for a restart would not make the directory writable, and would forget what is in memory)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    agent = run_agent(emulator_for(iid), state_dir=blocker / "state")
    failed = agent.wait_for("state.save_failed", 30)
    assert failed["path"] == str(blocker / "state" / "state.json")
    time.sleep(6)  # more than MAX_SAME_FAILURES ticks
    assert agent.proc.poll() is None and not agent.named("loop.failure")
    assert len(agent.named("state.save_failed")) == 1  # reported once, retried quietly
    status = agent.status()
    assert status["state"]["saved"] is False and "state not saved" in (status["last_error"] or "")
    assert state_of(iid) == "running"
