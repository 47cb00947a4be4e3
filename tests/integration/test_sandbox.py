"""`spawn sandbox` end to end, as a user runs it: a subprocess, its --json event stream.

Each run starts its own local cloud, launches through `spawn launch`, and runs the real agent as
a further subprocess; the assertions are on what the sandbox reports and what the cloud says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _sandbox(*flags: str, timeout: float = 240) -> tuple[int, list[dict[str, Any]], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.run(
        [sys.executable, "-m", "controller.cli", "sandbox", "--json", *flags],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, check=False)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, events, proc.stderr


def _names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


def _one(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [e for e in events if e["event"] == name]
    assert len(found) == 1, f"expected one {name!r} event, got {len(found)}"
    return found[0]


def _agent(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "agent" and e["agent_event"] == name]


def _in_order(events: list[dict[str, Any]], *names: str) -> None:
    seen = _names(events)
    positions = [seen.index(n) for n in names]
    assert positions == sorted(positions), f"events out of order: {names} at {positions} in {seen}"


@pytest.fixture(scope="module")
def ttl_run() -> tuple[int, list[dict[str, Any]], str]:
    # The defaults but the TTL: warnings at 10 s and 5 s before a 40 s TTL. The default 20 s
    # leaves too little time for them when the suite's sandbox runs share a loaded 2-core machine
    # (launch to agent-ready took more than 15 s there).
    return _sandbox("--ttl", "40s")


# The tests that read one sandbox run share it on one xdist worker; the runs themselves (five
# `spawn sandbox` processes, each with its own local cloud on free ports) go to different workers.
TTL_RUN = pytest.mark.xdist_group("sandbox-ttl-run")
COMPLETION_RUN = pytest.mark.xdist_group("sandbox-completion-run")


@TTL_RUN
def test_ttl_lifecycle_ends_with_the_agents_own_terminate_call(
        ttl_run: tuple[int, list[dict[str, Any]], str]) -> None:
    code, events, stderr = ttl_run
    assert code == 0, stderr
    _in_order(events, "sandbox-started", "instance-launched", "user-data-stored", "imds-started",
              "agent-started", "agent-ready", "warning", "terminate-call", "finished")
    launched = _one(events, "instance-launched")
    instance_id = launched["instance_id"]
    assert launched["state"] == "running"
    assert launched["deadline"].endswith("Z")

    call = _one(events, "terminate-call")
    assert call == {**call, "action": "terminate", "reason": "ttl-expired", "instance_id": instance_id}
    # The agent itself made the EC2 call, on its own instance, with role credentials from IMDS.
    # (Its DryRun permission proof at start is not a call that ends anything.)
    calls = [e for e in _agent(events, "aws.call")
             if e.get("operation") == "TerminateInstances" and not e.get("dry_run")]
    assert [c["instance_id"] for c in calls] == [instance_id]
    assert _agent(events, "action.done")[0]["instance_id"] == instance_id

    states = [e["state"] for e in events if e["event"] == "instance-state"]
    assert states[-1] == "terminated"
    finished = _one(events, "finished")
    assert finished["outcome"] == "terminated"
    assert finished["ended_by"] == "agent"
    assert finished["reason"] == "ttl-expired"
    assert finished["agent_exit_code"] == 0


@TTL_RUN
def test_the_agent_warns_and_counts_down_before_acting(
        ttl_run: tuple[int, list[dict[str, Any]], str]) -> None:
    _code, events, _stderr = ttl_run
    warnings = [e for e in events if e["event"] == "warning"]
    assert warnings and all(w["reason"] == "ttl-expired" for w in warnings)
    left = [e["seconds_left"] for e in events if e["event"] == "countdown"]
    assert left and left == sorted(left, reverse=True) and left[-1] <= 1


@TTL_RUN
def test_user_data_is_stored_verified_and_not_executed(
        ttl_run: tuple[int, list[dict[str, Any]], str]) -> None:
    _code, events, _stderr = ttl_run
    stored = _one(events, "user-data-stored")
    assert stored["executed"] is False
    assert stored["bundle_verified"] is True
    assert len(stored["bundle_sha256"]) == 64
    assert "00-spored-install.sh" in stored["parts"]
    started = _one(events, "agent-started")
    changes = started["config_changes"]
    assert changes["backstop"] == ["true", "false"]  # launch turns it on; never in the sandbox
    assert changes["wall"][1] == "false"


@TTL_RUN
def test_the_role_is_the_agents_least_privilege_role(
        ttl_run: tuple[int, list[dict[str, Any]], str]) -> None:
    _code, events, _stderr = ttl_run
    role = _one(events, "role-provisioned")
    statements = role["inline_policies"]["spawn-agent"]["Statement"]
    destructive = [s for s in statements if "ec2:TerminateInstances" in s["Action"]]
    assert destructive and all("Condition" in s for s in destructive)


@pytest.fixture(scope="module")
def completion_run() -> tuple[int, list[dict[str, Any]], str]:
    return _sandbox("--ttl", "10m", "--complete-after", "1s",
                    "--iam-policy", "s3:ReadOnly@my-bucket/data/*")


@COMPLETION_RUN
def test_completion_ends_the_instance_with_reason_completed(
        completion_run: tuple[int, list[dict[str, Any]], str]) -> None:
    code, events, stderr = completion_run
    assert code == 0, stderr
    _in_order(events, "agent-ready", "completion-signalled", "terminate-call", "finished")
    assert _agent(events, "completion.marker")
    finished = _one(events, "finished")
    assert (finished["outcome"], finished["ended_by"], finished["reason"]) == \
        ("terminated", "agent", "completed")


@COMPLETION_RUN
def test_iam_policy_flags_shape_the_role_launch_creates(
        completion_run: tuple[int, list[dict[str, Any]], str]) -> None:
    _code, events, _stderr = completion_run
    role = _one(events, "role-provisioned")
    assert set(role["inline_policies"]) >= {"spawn-agent", "spawn-templates"}
    resources = json.dumps(role["inline_policies"]["spawn-templates"])
    assert "arn:aws:s3:::my-bucket" in resources
    assert "arn:aws:s3:::my-bucket/data/*" in resources


def test_spot_notice_is_seen_by_the_agent_and_the_cloud_reclaims() -> None:
    code, events, stderr = _sandbox("--ttl", "10m", "--spot-interruption-after", "1s")
    assert code == 0, stderr
    assert _one(events, "instance-launched")["spot"] is True
    _in_order(events, "agent-ready", "spot-notice-armed", "terminate-call", "finished")
    seen = _agent(events, "notice.seen")
    assert seen and seen[0]["kind"] == "spot" and seen[0]["action"] == "terminate"
    finished = _one(events, "finished")
    assert (finished["outcome"], finished["reason"]) == ("terminated", "spot-interruption")
    assert finished["ended_by"].startswith("cloud")
    assert not _agent(events, "action.start")  # on spot the agent prepares; AWS reclaims


def _spawn(env: dict[str, str], *argv: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "controller.cli", *argv, "--json"], capture_output=True,
                          text=True, timeout=120, env=env, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def test_keep_lets_spawn_act_on_the_local_cloud_and_the_agent_reacts() -> None:
    import queue
    import signal
    import threading
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.cli", "sandbox", "--json", "--keep", "--ttl", "5m"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    lines: queue.Queue[dict[str, Any]] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def read() -> None:
        for raw in stdout:
            if raw.strip():
                lines.put(json.loads(raw))

    threading.Thread(target=read, daemon=True).start()
    events: list[dict[str, Any]] = []

    def wait_for(match: Any, seconds: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                event = lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                continue
            events.append(event)
            if match(event):
                return event
        raise AssertionError(f"no matching event in {seconds}s; got {_names(events)}")

    try:
        keep = wait_for(lambda e: e["event"] == "keep")
        instance_id = keep["instance_id"]
        cli_env = {**env, **keep["environment"]}
        wait_for(lambda e: e["event"] == "agent-ready")

        extended = _spawn(cli_env, "extend", instance_id, "+10m", "--region", "us-east-1")
        new_deadline = extended["deadline"]
        # The agent re-reads its tags and plans for the new deadline, as on EC2.
        wait_for(lambda e: e["event"] == "agent" and e["agent_event"] == "decision"
                 and e.get("at") == new_deadline, seconds=60)

        listed = _spawn(cli_env, "list", "--region", "us-east-1")
        assert instance_id in json.dumps(listed)

        _spawn(cli_env, "terminate", instance_id, "--yes", "--region", "us-east-1")
        wait_for(lambda e: e["event"] == "instance-state" and e["state"] == "terminated", seconds=60)
        wait_for(lambda e: e["event"] == "keep")  # still up after the instance ended
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        finished = wait_for(lambda e: e["event"] == "finished", seconds=60)
        assert finished["ended_by"] == "someone else"
        assert not [e for e in events if e["event"] == "terminate-call"]
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_a_failed_launch_ends_the_stream_with_its_outcome_and_exit_2() -> None:
    code, lines, _stderr = _sandbox("--instance-type", "x9.nothing")
    assert code == 2
    events = [e for e in lines if "event" in e]
    assert events[0]["event"] == "sandbox-started"
    finished = events[-1]
    assert (finished["event"], finished["outcome"], finished["error"]) == ("finished", "failed", "validation")
    assert "--instance-type" in finished["message"]
    assert "instance-launched" not in _names(events)
