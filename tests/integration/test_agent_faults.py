"""The real `spored run` under faults: bad tag values, spot notices that are not terminations,
clock steps, unreadable metadata, unwritable state and an EC2 endpoint that never answers.

Each test starts the agent as a subprocess (``run_agent``, tests/integration/conftest.py) against
the IMDS emulator and moto, sometimes through the fault-injecting proxy
(controller/sandbox/faultproxy.py), and waits for its events and status file, never for a fixed time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.sandbox.agent import AgentProcess, spored_command
from controller.sandbox.faultproxy import FaultProxy
from controller.sandbox.imds_emulator import ImdsEmulator
from spored.contract import format_timestamp
from tests.integration.conftest import (
    ENDED,
    LATE_OK,
    Emulators,
    StartAgent,
    ec2,
    evaluated_after,
    has_deadline,
    in_seconds,
    lag,
    launch,
    more_evaluations,
    set_deadline,
    started,
    state_of,
    timestamp,
    until,
)

# Each test launches instances of its own: one moto state for the module (no reset per test).
pytestmark = pytest.mark.shared_moto


# ---------------------------------------------------------------------- managed means exactly true
@pytest.mark.parametrize("value", ["TRUE", "true "])
def test_a_managed_value_other_than_exactly_true_is_reported_and_never_acted_on(
        emulator_for: Emulators, run_agent: StartAgent, value: str) -> None:
    deadline = in_seconds(1)
    iid = launch({"spawn:managed": value, "spawn:expires-at": format_timestamp(deadline)})
    agent = run_agent(emulator_for(iid))
    started(agent)
    agent.wait_for("policy.problem", 15,
                   lambda e: "spawn:managed" in e["problem"] and repr(value) in e["problem"])
    # evaluated 2 s past the deadline: an agent that took the value for "true" has acted by now
    evaluated_after(agent, deadline + timedelta(seconds=2))
    assert state_of(iid) == "running"
    assert not agent.events("action.start")
    status = agent.status()
    assert status["managed"] is False
    assert any("spawn:managed" in p for p in status["problems"])


# ---------------------------------------------------------------------- bounded spawn:expires-at
def test_a_year_3000_expires_at_is_refused_and_the_ttl_stays_in_force(
        emulator_for: Emulators, run_agent: StartAgent) -> None:
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h", "spawn:expires-at": "3000-01-01T00:00:00Z"})
    agent = run_agent(emulator_for(iid))
    started(agent)
    agent.wait_status(lambda s: s.get("deadline_source") == "launch time + spawn:ttl", 15)
    reservation = ec2().describe_instances(InstanceIds=[iid])["Reservations"][0]
    launched = reservation["Instances"][0]["LaunchTime"]
    assert agent.status()["deadline"] == format_timestamp(launched + timedelta(hours=3))
    assert any("spawn:expires-at" in p and "366 days" in p for p in agent.status()["problems"])
    assert any("366 days" in e["problem"] for e in agent.events("policy.problem"))


# ---------------------------------------------------------------------- spot notices keep their action
@pytest.mark.parametrize("action", ["stop", "hibernate"])
def test_a_spot_notice_carries_its_own_action_to_the_warning_the_hook_and_the_log(
        emulator_for: Emulators, run_agent: StartAgent, tmp_path: Path, action: str) -> None:
    seen = tmp_path / "hook-env"
    hook = tmp_path / "pre-stop.sh"
    hook.write_text(f'#!/bin/sh\necho "$SPORED_ACTION $SPORED_REASON" > {seen}.tmp\nmv {seen}.tmp {seen}\n')
    hook.chmod(0o755)
    iid = launch({"spawn:managed": "true", "spawn:ttl": "2h"}, spot=True)  # notices: spot only
    emu = emulator_for(iid)
    agent = run_agent(emu, f'pre_stop_hook = "{hook}"\n')
    started(agent)
    emu.arm_spot(action, datetime.now(UTC) + timedelta(minutes=2))
    until(seen.exists, 20, "the hook ran", agent)
    assert seen.read_text().split() == [action, "spot-interruption"]
    warning = json.loads((agent.dirs.runtime / "warning").read_text())
    assert warning["action"] == action and warning["reason"] == "spot-interruption"
    assert action in warning["message"]
    assert agent.wait_for("notice", 15)["action"] == action
    assert state_of(iid) == "running"  # AWS acts on its notice, not the agent


# ---------------------------------------------------------------------- changes just before the deadline
@pytest.mark.parametrize(("change", "lead"), [("extend", 1.0), ("unmanage", 0.5)])
def test_a_change_a_moment_before_the_deadline_is_honoured(
        emulator_for: Emulators, run_agent: StartAgent, change: str, lead: float) -> None:
    """The tags are re-read right before the call: no read from the "prepare" look 2 s earlier is
    reused. The regular refresh is an hour away, so only those two reads can see the change."""
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    agent = run_agent(emulator_for(iid), 'tag_refresh = "1h"\n')
    started(agent)
    deadline = set_deadline(iid, 8)
    agent.send_signal(signal.SIGHUP)  # SIGHUP re-reads the tags at once
    has_deadline(agent, deadline)
    # The change lands at a moment on the clock (after the early look, before the deadline), not
    # after something the agent does: the one wait for the clock here.
    time.sleep(max(0.0, (deadline - timedelta(seconds=lead)).timestamp() - time.time()))
    if change == "extend":
        set_deadline(iid, 600)
    else:
        ec2().delete_tags(Resources=[iid], Tags=[{"Key": "spawn:managed"}])
    agent.wait_for("action.cancelled", 30)
    evaluated_after(agent, deadline + timedelta(seconds=2))
    assert state_of(iid) == "running", agent.log_tail()
    assert not agent.events("action.start")


# ---------------------------------------------------------------------- an EC2 endpoint that never answers
def test_a_black_holed_terminate_is_a_recorded_failure_and_arms_the_backstop(
        emulator_for: Emulators, run_agent: StartAgent, proxy: FaultProxy) -> None:
    """Read timeouts (botocore's ReadTimeoutError, whose ``response`` is None) are failures of the
    call like any other: recorded, reported, counted toward the backstop; the loop never crashes."""
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    proxy.blackhole("TerminateInstances")
    agent = run_agent(emulator_for(iid), 'backstop = true\nbackstop_after = "3s"\n', ec2_endpoint=proxy.url)
    started(agent)
    set_deadline(iid, 2)
    failed = agent.wait_for("action.failed", 90)
    assert failed["code"] == "ReadTimeoutError" and failed["kind"] == "unreachable"
    agent.wait_for("backstop.poweroff_requested", 90)
    assert (agent.dirs.runtime / "private" / "poweroff").exists()
    assert "cannot reach AWS" in (agent.status()["last_error"] or "")
    assert not agent.events("loop.failure") and agent.exit_code() is None
    assert "blackhole" in proxy.outcomes("TerminateInstances")
    assert state_of(iid) == "running"


# ---------------------------------------------------------------------- completion under faults
class WatchdogSocket:
    """A NOTIFY_SOCKET for the agent that reads every datagram as systemd does (a full socket
    queue would block the agent's sendto) and counts its WATCHDOG=1 pings."""

    def __init__(self, path: Path) -> None:
        import socket
        import threading

        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.pings = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, OSError):
                continue
            self.pings += data.count(b"WATCHDOG=1")

    def drain(self) -> int:
        return self.pings

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()



def complete(agent: AgentProcess, *extra: str) -> subprocess.CompletedProcess[str]:
    """`spored complete --json EXTRA...`, as the workload runs it, against the agent's marker."""
    env = {**os.environ, "RUNTIME_DIRECTORY": str(agent.dirs.runtime)}
    return subprocess.run(spored_command("--config", str(agent.dirs.config), "complete", "--json", *extra),
                          env=env, capture_output=True, text=True, timeout=60, check=False)


def test_a_completion_survives_an_unwritable_state_directory(
        emulator_for: Emulators, run_agent: StartAgent, tmp_path: Path) -> None:
    """The marker is consumed only once the completion is saved; meanwhile the agent keeps it in
    memory, keeps its watchdog pings going, and `spored complete` does not claim success."""
    blocker = tmp_path / "blocked"
    blocker.write_text("")  # the state directory's parent is a file: nothing can be written there
    marker = tmp_path / "agent" / "run" / "complete"
    watchdog = WatchdogSocket(tmp_path / "notify.sock")
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h", "spawn:on-complete": "stop"})
    agent = run_agent(emulator_for(iid), f'completion_marker = "{marker}"\ncompletion_delay = "8s"\n',
                      state_dir=blocker / "state", env={"NOTIFY_SOCKET": str(watchdog.path)})
    try:
        assert agent.dirs.marker == marker
        started(agent)
        done = complete(agent, "--wait", "3")
        assert done.returncode == 75, (done.stdout, done.stderr)
        assert "not recorded" in done.stderr and json.loads(done.stdout)["recorded_by_agent"] is False
        assert marker.exists()
        agent.wait_for("state.save_failed", 10)
        before = watchdog.drain()
        # the tick still pings while the save is retried (the old loop raised before its ping)
        until(lambda: watchdog.drain() >= before + 2, 15, "two more watchdog pings", agent)
        assert agent.exit_code() is None and not agent.events("loop.failure")
        status = agent.status()
        assert status["completion"]["completed_at"] and status["completion"]["marker_pending"] is True
        assert status["state"]["saved"] is False
        blocker.unlink()  # the disk is back
        agent.wait_for("completion.consumed", 15)
        assert not marker.exists() and (blocker / "state" / "state.json").exists()
        agent.wait_for("action.done", 30)
        assert state_of(iid) in {"stopping", "stopped"}
    finally:
        watchdog.close()


def test_a_completion_marker_from_an_earlier_boot_is_ignored(
        emulator_for: Emulators, run_agent: StartAgent, tmp_path: Path) -> None:
    btime = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                 if line.startswith("btime "))
    (tmp_path / "agent" / "run").mkdir(mode=0o750, parents=True)
    marker = tmp_path / "agent" / "run" / "complete"
    marker.write_text("2026-01-01T00:00:00Z\n")
    os.utime(marker, (btime - 3600, btime - 3600))  # written an hour before this boot
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h", "spawn:on-complete": "stop"})
    agent = run_agent(emulator_for(iid), f'completion_marker = "{marker}"\n')
    started(agent)
    stale = agent.wait_for("completion.stale_marker", 10)
    assert stale["marker"] == str(marker) and stale["why"].startswith("written before this boot")
    # evaluated 3 s after: an agent that took the marker (an hour old, completion_delay 2 s) has
    # stopped the instance by now
    evaluated_after(agent, timestamp(stale) + timedelta(seconds=3))
    assert state_of(iid) == "running"
    assert agent.status()["completion"]["completed_at"] is None and not agent.events("action.start")
    assert not marker.exists()


# ---------------------------------------------------------------------- metadata disabled mid-run
@pytest.mark.parametrize("on_complete", ["terminate", "stop"])
def test_metadata_disabled_mid_run_still_ends_at_the_last_known_deadline(
        emulator_for: Emulators, run_agent: StartAgent, on_complete: str) -> None:
    """403 from instance metadata from some point on: the deadline known from the last good tags is
    enforced by the OS power-off request after the grace, and the user can see why."""
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h", "spawn:on-complete": on_complete})
    emu = emulator_for(iid)
    agent = run_agent(emu, 'backstop = true\nbackstop_after = "3s"\n')
    started(agent)
    deadline = set_deadline(iid, 4)
    has_deadline(agent, deadline)
    emu.endpoint_enabled = False  # every metadata request is 403 from now on
    lost = agent.wait_for("metadata.lost", 30)
    assert lost["action"] == on_complete and lost["deadline"] == format_timestamp(deadline)
    assert "power-off" in lost["fallback"]
    request = agent.wait_for("backstop.poweroff_requested", 30)
    assert f"shutdown behaviour: {on_complete}" in request["why"]
    assert json.loads((agent.dirs.runtime / "private" / "poweroff").read_text())["reason"] == request["why"]
    # the status file is rewritten at the end of the evaluation that requested the power-off
    status = agent.wait_status(lambda s: any(k.startswith("backstop@ttl-expired@") for k in s["done"]), 15,
                               "the power-off request in the status file")
    assert status["failure"]["kind"] == "metadata"
    assert "instance metadata unreadable" in status["failure"]["message"]
    assert status["deadline"] == format_timestamp(deadline)  # still the last known deadline
    assert state_of(iid) == "running"  # the power-off (stubbed here) does the ending


# ---------------------------------------------------------------------- wall-clock steps
def clock_agent(emulator_for: Emulators, run_agent: StartAgent, tmp_path: Path, *, seconds: float,
                env: dict[str, str] | None = None) -> tuple[str, ImdsEmulator, AgentProcess, Path, datetime]:
    """An agent whose wall clock tests can step (SPORED_TEST_CLOCK_OFFSET_FILE), deadline in ``seconds``."""
    offset = tmp_path / "clock-offset"
    offset.write_text("0")
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    emu = emulator_for(iid)
    agent = run_agent(emu, env={"SPORED_TEST_CLOCK_OFFSET_FILE": str(offset), **(env or {})})
    started(agent)
    deadline = set_deadline(iid, seconds)
    has_deadline(agent, deadline)
    return iid, emu, agent, offset, deadline


def test_a_forward_clock_step_the_metadata_date_contradicts_never_ends_the_instance_early(
        emulator_for: Emulators, run_agent: StartAgent, tmp_path: Path) -> None:
    iid, _emu, agent, offset, deadline = clock_agent(emulator_for, run_agent, tmp_path, seconds=12)
    offset.write_text("3600")  # the wall clock jumps an hour ahead; metadata's Date says otherwise
    step = agent.wait_for("clock.step", 10)
    assert round(step["step_seconds"] / 60) == 60
    agent.wait_for("clock.refuted", 10)
    # two more evaluations on the stepped clock (counted, not timed: the agent's clock is the one
    # stepped): an agent that believed the step has ended the instance an hour early by now
    more_evaluations(agent, 2)
    assert state_of(iid) == "running" and not agent.events("action.start"), agent.log_tail()
    assert agent.status()["clock"]["refuted_step_seconds"] is not None
    # The deadline is enforced on the agent's own (monotonic-anchored) time, with its warning first.
    # (never more than a second early; the faults being guarded against are an hour off)
    agent.wait_for("action.done", 40)
    assert state_of(iid) in ENDED
    assert -1 <= lag(agent.events("action.start")[0], deadline) <= LATE_OK
    assert agent.events("warning")


def test_a_forward_clock_step_confirmed_by_the_metadata_date_is_followed(
        emulator_for: Emulators, run_agent: StartAgent, tmp_path: Path) -> None:
    iid, emu, agent, offset, _deadline = clock_agent(emulator_for, run_agent, tmp_path, seconds=600)
    emu.clock_offset = 3600  # the metadata service agrees: the hour really passed
    offset.write_text("3600")
    confirmed = agent.wait_for("clock.confirmed", 15)
    assert confirmed["source"] == "instance metadata Date header"
    agent.wait_for("action.done", 30)  # past the deadline now: acted on
    assert state_of(iid) in ENDED


def test_a_backward_clock_step_does_not_stall_the_timers(
        emulator_for: Emulators, run_agent: StartAgent, tmp_path: Path) -> None:
    watchdog = WatchdogSocket(tmp_path / "notify.sock")
    try:
        iid, _emu, agent, offset, deadline = clock_agent(
            emulator_for, run_agent, tmp_path, seconds=10, env={"NOTIFY_SOCKET": str(watchdog.path)})
        offset.write_text("-3600")  # the wall clock jumps an hour back
        agent.wait_for("clock.step", 10)
        before = watchdog.drain()
        # the tick goes on: the watchdog keeps being fed
        until(lambda: watchdog.drain() >= before + 2, 15, "two more watchdog pings", agent)
        agent.wait_for("action.done", 40)  # on time, not an hour late
        assert state_of(iid) in ENDED
        assert lag(agent.events("action.start")[0], deadline) <= LATE_OK
    finally:
        watchdog.close()
