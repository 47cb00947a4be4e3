"""The real `spored run` under faults: bad tag values, spot notices that are not terminations,
clock steps, unreadable metadata, unwritable state and an EC2 endpoint that never answers.

Each test starts the agent as a subprocess against the IMDS emulator and moto (the fixtures of
test_agent_run), sometimes through the fault-injecting proxy (controller/sandbox/faultproxy.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.sandbox.faultproxy import FaultProxy
from controller.sandbox.imds_emulator import ImdsEmulator
from spored.contract import format_timestamp
from tests.conftest import MotoServer
from tests.integration import test_agent_run as kit

Agent = kit.Agent
run_agent = kit.run_agent
emulator_for = kit.emulator_for
launch, started, state_of, in_seconds = kit.launch, kit.started, kit.state_of, kit.in_seconds
ENDED = kit.ENDED


def wait_until(check: Callable[[], bool], timeout: float, what: str, agent: Agent) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout}s; log:\n{agent.log_path.read_text()[-4000:]}")


# ---------------------------------------------------------------------- managed means exactly true
@pytest.mark.parametrize("value", ["TRUE", "true "])
def test_a_managed_value_other_than_exactly_true_is_reported_and_never_acted_on(
        emulator_for: Callable[[str], ImdsEmulator], run_agent: Callable[..., Agent], value: str) -> None:
    iid = launch({"spawn:managed": value, "spawn:expires-at": format_timestamp(in_seconds(1))})
    agent = run_agent(emulator_for(iid))
    started(agent)
    wait_until(lambda: any("spawn:managed" in e["problem"] and repr(value) in e["problem"]
                           for e in agent.named("policy.problem")), 15, "a policy.problem naming the value",
               agent)
    time.sleep(3)  # the deadline is past: an agent that took the value for "true" acts by now
    assert state_of(iid) == "running"
    assert not agent.named("action.start")
    status = agent.status()
    assert status["managed"] is False
    assert any("spawn:managed" in p for p in status["problems"])


# ---------------------------------------------------------------------- bounded spawn:expires-at
def test_a_year_3000_expires_at_is_refused_and_the_ttl_stays_in_force(
        emulator_for: Callable[[str], ImdsEmulator], run_agent: Callable[..., Agent]) -> None:
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h", "spawn:expires-at": "3000-01-01T00:00:00Z"})
    agent = run_agent(emulator_for(iid))
    started(agent)
    kit.wait_status(agent, "deadline_source", "launch time + spawn:ttl")
    reservation = kit.ec2().describe_instances(InstanceIds=[iid])["Reservations"][0]
    launched = reservation["Instances"][0]["LaunchTime"]
    assert agent.status()["deadline"] == format_timestamp(launched + timedelta(hours=3))
    assert any("spawn:expires-at" in p and "366 days" in p for p in agent.status()["problems"])
    assert any("366 days" in e["problem"] for e in agent.named("policy.problem"))


# ---------------------------------------------------------------------- spot notices keep their action
@pytest.mark.parametrize("action", ["stop", "hibernate"])
def test_a_spot_notice_carries_its_own_action_to_the_warning_the_hook_and_the_log(
        emulator_for: Callable[[str], ImdsEmulator], run_agent: Callable[..., Agent], tmp_path: Path,
        action: str) -> None:
    seen = tmp_path / "hook-env"
    hook = tmp_path / "pre-stop.sh"
    hook.write_text(f'#!/bin/sh\necho "$SPORED_ACTION $SPORED_REASON" > {seen}.tmp\nmv {seen}.tmp {seen}\n')
    hook.chmod(0o755)
    iid = launch({"spawn:managed": "true", "spawn:ttl": "2h"}, spot=True)  # notices: spot only
    emu = emulator_for(iid)
    agent = run_agent(emu, f'pre_stop_hook = "{hook}"\n')
    started(agent)
    emu.arm_spot(action, datetime.now(UTC) + timedelta(minutes=2))
    wait_until(seen.exists, 15, "the hook ran", agent)
    assert seen.read_text().split() == [action, "spot-interruption"]
    warning = json.loads((agent.runtime / "warning").read_text())
    assert warning["action"] == action and warning["reason"] == "spot-interruption"
    assert action in warning["message"]
    assert agent.wait_for("notice", 5)["action"] == action
    assert state_of(iid) == "running"  # AWS acts on its notice, not the agent


# ---------------------------------------------------------------------- changes just before the deadline
def _sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, moment.timestamp() - time.time()))


@pytest.mark.parametrize(("change", "lead"), [("extend", 1.0), ("unmanage", 0.5)])
def test_a_change_a_moment_before_the_deadline_is_honoured(
        emulator_for: Callable[[str], ImdsEmulator], run_agent: Callable[..., Agent],
        change: str, lead: float) -> None:
    """The tags are re-read right before the call: no read from the "prepare" look 2 s earlier is
    reused. The regular refresh is an hour away, so only those two reads can see the change."""
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    agent = run_agent(emulator_for(iid), 'tag_refresh = "1h"\n')
    started(agent)
    deadline = kit.set_deadline(iid, 8)
    agent.proc.send_signal(signal.SIGHUP)  # SIGHUP re-reads the tags at once
    kit.wait_status(agent, "deadline", format_timestamp(deadline))
    _sleep_until(deadline - timedelta(seconds=lead))
    if change == "extend":
        kit.set_deadline(iid, 600)
    else:
        kit.ec2().delete_tags(Resources=[iid], Tags=[{"Key": "spawn:managed"}])
    _sleep_until(deadline + timedelta(seconds=3))
    assert state_of(iid) == "running", agent.log_path.read_text()[-3000:]
    assert not agent.named("action.start")
    assert agent.named("action.cancelled")


# ---------------------------------------------------------------------- an EC2 endpoint that never answers
@pytest.fixture
def proxy(aws: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(aws.url) as running:
        yield running


def test_a_black_holed_terminate_is_a_recorded_failure_and_arms_the_backstop(
        emulator_for: Callable[[str], ImdsEmulator], run_agent: Callable[..., Agent],
        proxy: FaultProxy) -> None:
    """Read timeouts (botocore's ReadTimeoutError, whose ``response`` is None) are failures of the
    call like any other: recorded, reported, counted toward the backstop; the loop never crashes."""
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    proxy.blackhole("TerminateInstances")
    agent = run_agent(emulator_for(iid), 'backstop = true\nbackstop_after = "3s"\n', ec2_endpoint=proxy.url)
    started(agent)
    kit.set_deadline(iid, 2)
    failed = agent.wait_for("action.failed", 90)
    assert failed["code"] == "ReadTimeoutError" and failed["kind"] == "unreachable"
    agent.wait_for("backstop.poweroff_requested", 90)
    assert (agent.runtime / "private" / "poweroff").exists()
    assert "cannot reach AWS" in (agent.status()["last_error"] or "")
    assert not agent.named("loop.failure") and agent.proc.poll() is None
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


def complete(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RUNTIME_DIRECTORY": str(tmp_path / "run")}
    return subprocess.run([sys.executable, "-m", "spored.cli", "--config", str(tmp_path / "spored.toml"),
                           "complete", "--json", *extra],
                          env=env, capture_output=True, text=True, timeout=60, check=False)


def test_a_completion_survives_an_unwritable_state_directory(
        emulator_for: Callable[[str], ImdsEmulator], run_agent: Callable[..., Agent], tmp_path: Path) -> None:
    """The marker is consumed only once the completion is saved; meanwhile the agent keeps it in
    memory, keeps its watchdog pings going, and `spored complete` does not claim success."""
    blocker = tmp_path / "blocked"
    blocker.write_text("")  # the state directory's parent is a file: nothing can be written there
    marker = tmp_path / "run" / "complete"
    watchdog = WatchdogSocket(tmp_path / "notify.sock")
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h", "spawn:on-complete": "stop"})
    agent = run_agent(emulator_for(iid), f'completion_marker = "{marker}"\ncompletion_delay = "8s"\n',
                      state_dir=blocker / "state", env_extra={"NOTIFY_SOCKET": str(watchdog.path)})
    try:
        started(agent)
        done = complete(tmp_path, "--wait", "3")
        assert done.returncode == 75, (done.stdout, done.stderr)
        assert "not recorded" in done.stderr and json.loads(done.stdout)["recorded_by_agent"] is False
        assert marker.exists()
        agent.wait_for("state.save_failed", 10)
        before = watchdog.drain()
        # the tick still pings while the save is retried (the old loop raised before its ping)
        wait_until(lambda: watchdog.drain() >= before + 2, 15, "two more watchdog pings", agent)
        assert agent.proc.poll() is None and not agent.named("loop.failure")
        status = agent.status()
        assert status["completion"]["completed_at"] and status["completion"]["marker_pending"] is True
        assert status["state"]["saved"] is False
        blocker.unlink()  # the disk is back
        agent.wait_for("completion.consumed", 15)
        assert not marker.exists() and (blocker / "state" / "state.json").exists()
        assert kit.wait_state(iid, {"stopping", "stopped"}, timeout=20) is not None
    finally:
        watchdog.close()


def test_a_completion_marker_from_an_earlier_boot_is_ignored(
        emulator_for: Callable[[str], ImdsEmulator], run_agent: Callable[..., Agent], tmp_path: Path) -> None:
    btime = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                 if line.startswith("btime "))
    (tmp_path / "run").mkdir(mode=0o750)
    marker = tmp_path / "run" / "complete"
    marker.write_text("2026-01-01T00:00:00Z\n")
    os.utime(marker, (btime - 3600, btime - 3600))  # written an hour before this boot
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h", "spawn:on-complete": "stop"})
    agent = run_agent(emulator_for(iid), f'completion_marker = "{marker}"\n')
    started(agent)
    stale = agent.wait_for("completion.stale_marker", 10)
    assert stale["marker"] == str(marker) and stale["why"].startswith("written before this boot")
    time.sleep(4)  # completion_delay is 2 s: an agent that took it would have stopped the instance
    assert state_of(iid) == "running"
    assert agent.status()["completion"]["completed_at"] is None and not agent.named("action.start")
    assert not marker.exists()


# ---------------------------------------------------------------------- metadata disabled mid-run
@pytest.mark.parametrize("on_complete", ["terminate", "stop"])
def test_metadata_disabled_mid_run_still_ends_at_the_last_known_deadline(
        emulator_for: Callable[[str], ImdsEmulator], run_agent: Callable[..., Agent],
        on_complete: str) -> None:
    """403 from instance metadata from some point on: the deadline known from the last good tags is
    enforced by the OS power-off request after the grace, and the user can see why."""
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h", "spawn:on-complete": on_complete})
    emu = emulator_for(iid)
    agent = run_agent(emu, 'backstop = true\nbackstop_after = "3s"\n')
    started(agent)
    deadline = kit.set_deadline(iid, 4)
    kit.wait_status(agent, "deadline", format_timestamp(deadline))
    emu.endpoint_enabled = False  # every metadata request is 403 from now on
    lost = agent.wait_for("metadata.lost", 30)
    assert lost["action"] == on_complete and lost["deadline"] == format_timestamp(deadline)
    assert "power-off" in lost["fallback"]
    request = agent.wait_for("backstop.poweroff_requested", 30)
    assert f"shutdown behaviour: {on_complete}" in request["why"]
    assert json.loads((agent.runtime / "private" / "poweroff").read_text())["reason"] == request["why"]
    # the status file is rewritten at the end of the evaluation that requested the power-off
    wait_until(lambda: any(k.startswith("backstop@ttl-expired@") for k in agent.status()["done"]), 10,
               "the power-off request in the status file", agent)
    status = agent.status()
    assert status["failure"]["kind"] == "metadata"
    assert "instance metadata unreadable" in status["failure"]["message"]
    assert status["deadline"] == format_timestamp(deadline)  # still the last known deadline
    assert state_of(iid) == "running"  # the power-off (stubbed here) does the ending


# ---------------------------------------------------------------------- wall-clock steps
def clock_agent(emulator_for: Callable[[str], ImdsEmulator], run_agent: Callable[..., Agent],
                tmp_path: Path, *, seconds: float, env: dict[str, str] | None = None
                ) -> tuple[str, ImdsEmulator, Agent, Path, datetime]:
    """An agent whose wall clock tests can step (SPORED_TEST_CLOCK_OFFSET_FILE), deadline in ``seconds``."""
    offset = tmp_path / "clock-offset"
    offset.write_text("0")
    iid = launch({"spawn:managed": "true", "spawn:ttl": "3h"})
    emu = emulator_for(iid)
    agent = run_agent(emu, env_extra={"SPORED_TEST_CLOCK_OFFSET_FILE": str(offset), **(env or {})})
    started(agent)
    deadline = kit.set_deadline(iid, seconds)
    kit.wait_status(agent, "deadline", format_timestamp(deadline))
    return iid, emu, agent, offset, deadline


def test_a_forward_clock_step_the_metadata_date_contradicts_never_ends_the_instance_early(
        emulator_for: Callable[[str], ImdsEmulator], run_agent: Callable[..., Agent], tmp_path: Path) -> None:
    iid, _emu, agent, offset, deadline = clock_agent(emulator_for, run_agent, tmp_path, seconds=12)
    offset.write_text("3600")  # the wall clock jumps an hour ahead; metadata's Date says otherwise
    step = agent.wait_for("clock.step", 10)
    assert round(step["step_seconds"] / 60) == 60
    agent.wait_for("clock.refuted", 10)
    time.sleep(2)
    assert state_of(iid) == "running" and not agent.named("action.start"), agent.log_path.read_text()[-3000:]
    assert agent.status()["clock"]["refuted_step_seconds"] is not None
    # The deadline is enforced on the agent's own (monotonic-anchored) time, with its warning first.
    # (bounds for a loaded 2-core machine; the faults being guarded against are an hour off)
    seen = kit.wait_state(iid, ENDED, timeout=30)
    assert seen is not None and deadline.timestamp() - 1 <= seen <= deadline.timestamp() + 8
    assert agent.named("warning")


def test_a_forward_clock_step_confirmed_by_the_metadata_date_is_followed(
        emulator_for: Callable[[str], ImdsEmulator], run_agent: Callable[..., Agent], tmp_path: Path) -> None:
    iid, emu, agent, offset, _deadline = clock_agent(emulator_for, run_agent, tmp_path, seconds=600)
    emu.clock_offset = 3600  # the metadata service agrees: the hour really passed
    offset.write_text("3600")
    confirmed = agent.wait_for("clock.confirmed", 15)
    assert confirmed["source"] == "instance metadata Date header"
    assert kit.wait_state(iid, ENDED, timeout=15) is not None  # past the deadline now: acted on


def test_a_backward_clock_step_does_not_stall_the_timers(
        emulator_for: Callable[[str], ImdsEmulator], run_agent: Callable[..., Agent], tmp_path: Path) -> None:
    watchdog = WatchdogSocket(tmp_path / "notify.sock")
    try:
        iid, _emu, agent, offset, deadline = clock_agent(
            emulator_for, run_agent, tmp_path, seconds=10, env={"NOTIFY_SOCKET": str(watchdog.path)})
        offset.write_text("-3600")  # the wall clock jumps an hour back
        agent.wait_for("clock.step", 10)
        before = watchdog.drain()
        # the tick goes on: the watchdog keeps being fed
        wait_until(lambda: watchdog.drain() >= before + 2, 15, "two more watchdog pings", agent)
        seen = kit.wait_state(iid, ENDED, timeout=30)  # on time, not an hour late (loaded-machine bound)
        assert seen is not None and seen <= deadline.timestamp() + 8, agent.log_path.read_text()[-3000:]
    finally:
        watchdog.close()
