"""`spored run` as a real subprocess against the IMDS emulator and the moto server.

The agent runs through ``AgentProcess`` (the ``run_agent`` fixture, tests/integration/conftest.py):
the tests wait for its log events and its status file, never for a fixed time. Where a test shows
that something does NOT happen by some moment, it waits until the agent has evaluated at or past
that moment (``evaluated_after``). Reaction times are held to "never early, and not forgotten"
(``LATE_OK``); bench/agent_footprint.py measures them against the promise of 2 s.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.sandbox.agent import AgentProcess, signal_completion
from controller.sandbox.imds_emulator import ImdsEmulator
from spored.contract import format_timestamp, parse_timestamp
from tests.integration.conftest import (
    ENDED,
    LATE_OK,
    Emulators,
    StartAgent,
    agent_status_tag,
    ec2,
    evaluated_after,
    has_deadline,
    in_seconds,
    lag,
    launch,
    set_deadline,
    started,
    state_of,
    timestamp,
    until,
)

# Each test launches instances of its own: one moto state for the module (no reset per test).
pytestmark = pytest.mark.shared_moto



def test_ttl_expiry_terminates_at_the_deadline(emulator_for: Emulators, run_agent: StartAgent) -> None:
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    agent = run_agent(emulator_for(iid))
    started(agent)
    deadline = set_deadline(iid, 5)
    agent.wait_for("action.done", 30)
    assert state_of(iid) in ENDED
    assert 0 <= lag(agent.events("action.start")[0], deadline) <= LATE_OK
    # credentials came from the emulator, and the calls are the declared ones
    ops = {e["operation"] for e in agent.events("aws.call")}
    assert ops <= {"DescribeTags", "TerminateInstances", "CreateTags"} and "TerminateInstances" in ops
    assert agent.events("warning"), "a warning precedes the action"
    assert (agent.dirs.runtime / "warning").exists()


def test_a_metadata_hiccup_at_the_deadline_delays_the_action_by_seconds_not_a_tick(
        emulator_for: Emulators, run_agent: StartAgent) -> None:
    """The fresh tag read right before the action fails (connection dropped): the action is
    deferred, and tried again within seconds rather than at the next tick (30 s here)."""
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    emu = emulator_for(iid)
    agent = run_agent(emu, 'tick = "30s"\ntag_refresh = "1h"\n')
    started(agent, timeout=120)  # room for a slow first identity read (retried at the 30 s tick)
    deadline = set_deadline(iid, 8)
    agent.send_signal(signal.SIGHUP)  # re-read the tags now
    has_deadline(agent, deadline)
    # The outage begins 3 s before the deadline, before the agent's early look (2 s before it).
    # That is a moment on the clock, not something the agent does: the one wait for the clock here.
    time.sleep(max(0.0, deadline.timestamp() - 3 - time.time()))
    emu.faults.set(drop=1_000_000)  # every metadata request fails: the re-reads around the deadline
    agent.wait_for("action.deferred", timeout=30)
    emu.faults.set(drop=0)
    healed = datetime.now(UTC)
    # (whether TerminateInstances then succeeds depends on credentials fetched during the outage:
    # other tests cover the call; this one is about when the agent tries again)
    tried = agent.wait_for("action.start", timeout=40)
    assert timestamp(tried) - healed <= timedelta(seconds=10)  # the next tick: up to 30 s later


@pytest.mark.parametrize("managed", [None, "false", "TRUE-ish"])
def test_unmanaged_is_never_terminated(emulator_for: Emulators, run_agent: StartAgent,
                                       managed: str | None) -> None:
    deadline = in_seconds(1)
    tags = {"spawn:expires-at": format_timestamp(deadline)}
    if managed is not None:
        tags["spawn:managed"] = managed
    iid = launch(tags)
    agent = run_agent(emulator_for(iid))
    started(agent)
    evaluated_after(agent, deadline + timedelta(seconds=2))
    assert state_of(iid) == "running"
    assert not agent.events("action.start")
    assert agent.status()["managed"] is False
    assert agent_status_tag(iid) is None  # never written on an instance that is not managed


def tag_written(agent: AgentProcess, state: str, timeout: float = 30) -> str:
    """The value of the agent's first ``status_tag.written`` event for ``state``."""
    event = agent.wait_for("status_tag.written", timeout, lambda e: str(e["value"]).startswith(f"{state} "))
    return str(event["value"])


def test_agent_status_tag_is_written_at_start_and_on_a_change(
        emulator_for: Emulators, run_agent: StartAgent) -> None:
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    # The warning well before the action: each write is a child process that loads boto3, which
    # takes seconds on a loaded machine, and this test is about the writes, not the action.
    agent = run_agent(emulator_for(iid), 'warn_at = ["20s"]\n')
    started(agent)
    ready = tag_written(agent, "ready")
    since = parse_timestamp(ready.split(" ", 1)[1])
    assert abs((datetime.now(UTC) - since).total_seconds()) < 30
    assert agent.status()["boto3_loaded"] is False  # the write ran in a child process
    set_deadline(iid, 22)  # the warning (20 s before the deadline) at once, the action 20 s later
    warning = tag_written(agent, "warning")
    written = [e["value"] for e in agent.events("status_tag.written")]
    assert written[:2] == [ready, warning]  # one write per change, nothing in between
    assert {e["instance_id"] for e in agent.events("status_tag.written")} == {iid}
    assert agent_status_tag(iid) == warning  # what the agent logged is what EC2 holds


def test_extend_through_the_api_moves_the_deadline(emulator_for: Emulators, run_agent: StartAgent) -> None:
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    agent = run_agent(emulator_for(iid))
    started(agent)
    first = set_deadline(iid, 8)
    has_deadline(agent, first)
    later = first + timedelta(seconds=6)
    ec2().create_tags(Resources=[iid], Tags=[{"Key": "spawn:expires-at", "Value": format_timestamp(later)}])
    # tags are in metadata: the agent sees the change within one refresh (1 s here)
    has_deadline(agent, later)
    evaluated_after(agent, first + timedelta(seconds=2))
    assert state_of(iid) == "running", agent.log_tail()
    assert not agent.events("action.start")
    agent.wait_for("action.done", 30)
    assert state_of(iid) in ENDED
    assert 0 <= lag(agent.events("action.start")[0], later) <= LATE_OK


def test_extend_is_honoured_when_tags_come_from_the_api(emulator_for: Emulators,
                                                        run_agent: StartAgent) -> None:
    """Tags not in metadata, hourly refresh: the re-read right before the deadline sees the extension."""
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"}, metadata_tags=False)
    agent = run_agent(emulator_for(iid), 'tag_refresh_api = "1h"\n')
    started(agent)
    first = set_deadline(iid, 8)
    agent.send_signal(signal.SIGHUP)  # SIGHUP re-reads tags at once
    has_deadline(agent, first)
    set_deadline(iid, 3600)  # the agent's own refresh is an hour away
    evaluated_after(agent, first + timedelta(seconds=3))
    assert state_of(iid) == "running", agent.log_tail()
    assert not agent.events("action.start")
    ops = [e["operation"] for e in agent.events("aws.call") if not e.get("dry_run")]  # not the proof
    assert "DescribeTags" in ops and set(ops) <= {"DescribeTags", "CreateTags"}  # CreateTags: agent-status


def test_spot_notice_starts_the_hook(emulator_for: Emulators, run_agent: StartAgent, tmp_path: Path) -> None:
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
    agent.wait_for("hook.started", 20)
    hook_start, reason = until(lambda: marker.exists() and marker.read_text(), 20, "the hook's file",
                               agent).split()
    assert 0 <= float(hook_start) - armed <= LATE_OK
    assert reason == "spot-interruption"
    # two more polls of the same notice, and an evaluation after them: de-duplicated
    notice = "/latest/meta-data/spot/instance-action"
    polls = emu.log.count(method="GET", path=notice)
    until(lambda: emu.log.count(method="GET", path=notice) >= polls + 2, 20, "two more notice polls", agent)
    evaluated_after(agent, datetime.now(UTC))
    assert len(agent.events("hook.started")) == 1
    assert state_of(iid) == "running"  # AWS reclaims, not the agent


def test_notices_are_polled_only_on_a_spot_instance(emulator_for: Emulators, run_agent: StartAgent) -> None:
    """AWS sends interruption notices and rebalance recommendations to Spot Instances only: an
    on-demand agent reads its instance-life-cycle once and never polls them."""
    notice_paths = ("/latest/meta-data/spot/instance-action",
                    "/latest/meta-data/events/recommendations/rebalance")

    def count(emu: ImdsEmulator, *paths: str) -> int:
        return sum(emu.log.count(method="GET", path=p) for p in paths)

    on_demand = emulator_for(launch({"spawn:managed": "true", "spawn:ttl": "2h"}))
    agent = run_agent(on_demand)
    started(agent)
    # tags are re-read every second (FAST_CONFIG): four re-reads = seconds of a running agent
    until(lambda: count(on_demand, "/latest/meta-data/tags/instance") >= 5, 60, "five tag reads", agent)
    assert agent.events("life_cycle")[0]["value"] == "on-demand"
    assert count(on_demand, *notice_paths) == 0
    assert count(on_demand, "/latest/meta-data/instance-life-cycle") == 1
    assert agent.status()["notice_poll"] is False
    assert agent.stop(timeout=30) == 0

    spot = emulator_for(launch({"spawn:managed": "true", "spawn:ttl": "2h"}, spot=True))
    agent = run_agent(spot)
    started(agent)
    until(lambda: count(spot, *notice_paths) >= 6, 60, "six notice polls", agent)  # both paths, every second
    assert agent.events("life_cycle")[0]["value"] == "spot"
    assert agent.status()["notice_poll"] is True


def test_sigkill_and_restart_keep_the_same_deadline(emulator_for: Emulators, run_agent: StartAgent) -> None:
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    emu = emulator_for(iid)
    first = run_agent(emu)
    started(first)
    before = first.wait_status(lambda s: bool(s.get("deadline")), 15)["deadline"]
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    second = run_agent(emu)
    second.wait_status(lambda s: s.get("pid") == second.pid and bool(s.get("deadline")), 30,
                       "the restarted agent's deadline")
    assert second.status()["deadline"] == before
    launch_time = ec2().describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["LaunchTime"]
    assert before == format_timestamp(launch_time + timedelta(hours=3))


def test_completion_acts_after_the_delay_and_consumes_the_marker(
        emulator_for: Emulators, run_agent: StartAgent, tmp_path: Path) -> None:
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h", "spawn:on-complete": "stop"})
    marker = tmp_path / "agent" / "run" / "complete"
    agent = run_agent(emulator_for(iid), f'completion_marker = "{marker}"\n')
    assert agent.dirs.marker == marker
    started(agent)
    signalled = datetime.now(UTC)
    done = signal_completion(agent.dirs, agent.env)  # returns once the agent recorded it
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["recorded_by_agent"] is True
    # the completion counts from when the marker was written (its time, to the second)
    written = parse_timestamp(agent.wait_for("completion.marker", 15)["written_at"])
    assert written >= signalled.replace(microsecond=0)
    agent.wait_for("action.done", 30)
    assert state_of(iid) in {"stopping", "stopped"}
    # completion_delay = 2s: never before it (file times lag the clock by a few ms), not forgotten
    assert 2.0 - 0.05 <= lag(agent.events("action.start")[0], signalled) <= 2.0 + LATE_OK
    assert not marker.exists()
    assert agent.events("action.done")[0]["action"] == "stop"


def test_imds_faults_never_act_wrongly_and_enforcement_resumes(emulator_for: Emulators,
                                                               run_agent: StartAgent) -> None:
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    emu = emulator_for(iid)
    agent = run_agent(emu)
    started(agent)
    deadline = set_deadline(iid, 10)
    emu.faults.set(fail_503=40, retry_after=1)
    until(lambda: emu.log.count(status=503) >= 5, 20, "five 503 answers to the agent", agent)
    emu.faults.set(drop=10)
    until(lambda: emu.log.count(status=0) >= 3, 20, "three dropped connections", agent)
    assert state_of(iid) == "running"
    assert not agent.events("action.start")
    emu.faults.set(fail_503=0, drop=0)
    agent.wait_for("action.done", 40)
    assert state_of(iid) in ENDED
    assert 0 <= lag(agent.events("action.start")[0], deadline) <= LATE_OK


def test_refused_ec2_endpoint_does_not_terminate_and_is_reported(emulator_for: Emulators,
                                                                  run_agent: StartAgent) -> None:
    """EC2 unreachable past the deadline, backstop on: a power-off request, never a wrong call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    agent = run_agent(emulator_for(iid), 'backstop = true\nbackstop_after = "3s"\n', ec2_endpoint=dead)
    started(agent)
    set_deadline(iid, 2)
    agent.wait_for("action.failed", 30)
    agent.wait_for("backstop.poweroff_requested", 40)
    assert (agent.dirs.runtime / "private" / "poweroff").exists()  # in the agent's own 0700 directory
    assert state_of(iid) == "running"
    assert agent.status()["last_error"]


def test_sigterm_exits_cleanly_and_config_error_is_78(emulator_for: Emulators, run_agent: StartAgent) -> None:
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    emu = emulator_for(iid)
    agent = run_agent(emu)
    started(agent)
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=10) == 0
    bad = run_agent(emu, 'no_such_key = "x"\n')
    assert bad.wait(timeout=30) == 78
    assert "no_such_key" in bad.log_tail()


def test_an_unwritable_state_directory_is_reported_and_never_a_restart_loop(
        emulator_for: Emulators, run_agent: StartAgent, tmp_path: Path) -> None:
    """The state store is a failing component, retried on every evaluation: the loop goes on (an
    exit for a restart would not make the directory writable, and would forget what is in memory)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    agent = run_agent(emulator_for(iid), state_dir=blocker / "state")
    failed = agent.wait_for("state.save_failed", 30)
    assert failed["path"] == str(blocker / "state" / "state.json")
    # still evaluating (tick 1 s) 6 s later: more ticks than the 5 identical failures after which
    # the loop would exit for a restart (wait_status fails at once if the agent exits)
    evaluated_after(agent, timestamp(failed) + timedelta(seconds=6))
    assert agent.exit_code() is None and not agent.events("loop.failure")
    assert len(agent.events("state.save_failed")) == 1  # reported once, retried quietly
    status = agent.status()
    assert status["state"]["saved"] is False and "state not saved" in (status["last_error"] or "")
    assert state_of(iid) == "running"
