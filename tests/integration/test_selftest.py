"""`spawn selftest --local-agent` against the moto server: the real launch code, the sandbox's real
agent as a local process, the real proof program; failures injected at each stage, Ctrl-C, and
the run's time bound. After every run nothing it created is left: no live instance, no security
group, no key pair, no role or profile, no uploaded bundle object.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from controller import aws as controller_aws
from controller.cli import main
from tests.conftest import MotoServer

REGION = "us-east-1"
SPAWN = str(Path(sys.executable).with_name("spawn"))
# Long enough for the agent to be ready and warn before the deadline on a loaded 2-core machine.
FAST = ["--local-agent", "--ttl", "40s", "--json"]
# A proof program that reports what AWS answers when the role's conditions do not match.
DENIED_ON_ITSELF = ("print('spawn-selftest: proof target=self action=ec2:TerminateInstances expect=allowed "
                    "got=denied code=UnauthorizedOperation'); print('spawn-selftest: proof done')")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No SSH key and no user defaults: the run is what selftest itself decides."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return tmp_path


def _clients() -> dict[str, Any]:
    import boto3

    return {name: boto3.client(name, region_name=REGION) for name in ("ec2", "iam", "s3")}


def leftovers() -> dict[str, list[str]]:
    """What a selftest run could leave behind."""
    c = _clients()
    live = [i["InstanceId"] for r in c["ec2"].describe_instances()["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] != "terminated"]
    groups = [g["GroupName"] for g in c["ec2"].describe_security_groups()["SecurityGroups"]
              if g["GroupName"].startswith("spawn")]
    keys = [k["KeyName"] for k in c["ec2"].describe_key_pairs()["KeyPairs"]]
    roles = [r["RoleName"] for r in c["iam"].list_roles(PathPrefix="/spawn/")["Roles"]]
    profiles = [p["InstanceProfileName"] for p in c["iam"].list_instance_profiles(PathPrefix="/spawn/")
                ["InstanceProfiles"]]
    objects = [f"{b['Name']}/{o['Key']}" for b in c["s3"].list_buckets()["Buckets"]
               for o in c["s3"].list_objects_v2(Bucket=b["Name"]).get("Contents", [])]
    return {k: v for k, v in {"instances": live, "groups": groups, "keys": keys, "roles": roles,
                              "profiles": profiles, "objects": objects}.items() if v}


def _in_process(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    controller_aws.session.cache_clear()
    code = main(["selftest", *argv])
    out = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(out[-1])


def _verdicts(report: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["verdict"] for s in report["stages"]}


def test_the_whole_chain_passes_and_leaves_nothing(aws: MotoServer, home: Path) -> None:
    done = subprocess.run([SPAWN, "selftest", "--local-agent", "--ttl", "60s", "--json"],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ), check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["local_cloud"] is True
    assert _verdicts(report) == {
        "role": "passed", "running": "passed", "failsafe": "not-decided-here", "agent": "passed",
        "permissions": "not-decided-here", "status": "passed", "warning": "passed",
        "agent-ends": "passed", "terminated": "passed"}
    ends = next(s for s in report["stages"] if s["name"] == "agent-ends")
    assert "Client.UserInitiatedShutdown" in ends["detail"]
    assert report["peer_instance_id"] and report["instance_id"]
    assert any(item.startswith("IAM ") for item in report["cleanup"]["removed"]), report["cleanup"]
    assert report["cleanup"]["failed"] == []
    assert report["budget"]["max_minutes"] == 10 and report["budget"]["instances"] == 2
    assert "selftest budget: 2 x t4g.nano" in done.stderr  # printed before anything starts
    assert leftovers() == {}


def test_keep_role_keeps_only_the_role_and_profile(aws: MotoServer, home: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.selftest import proof

    # Stop at the permission stage: --keep-role is about cleanup, not the lifecycle.
    monkeypatch.setattr(proof, "PROGRAM", DENIED_ON_ITSELF)
    code, report = _in_process(capsys, *FAST, "--keep-role")
    assert code == 6
    left = leftovers()
    assert set(left) == {"roles", "profiles"}, left
    assert any("IAM" in item for item in report["cleanup"]["kept"])


def test_dry_run_prints_the_budget_the_launch_and_the_stages_and_creates_nothing(
        aws: MotoServer, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, plan = _in_process(capsys, "--local-agent", "--dry-run", "--json")
    assert code == 0 and plan["dry_run"] is True
    assert plan["budget"]["max_minutes"] == 10 and plan["budget"]["instances"] == 2
    assert plan["stages"][0]["name"] == "role" and len(plan["stages"]) == 9
    assert plan["launch"][:2] == ["spawn", "launch"] and "--ttl" in plan["launch"]
    assert plan["launch_plan"]["dry_run"] is True
    assert leftovers() == {}


def test_bad_iam_input_fails_the_role_stage_with_exit_2_and_creates_nothing(
        aws: MotoServer, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = _in_process(capsys, *FAST, "--iam-policy", "s3:ReadOnlyy")
    assert code == 2
    verdicts = _verdicts(report)
    assert verdicts["role"] == "failed" and set(list(verdicts.values())[1:]) == {"not-reached"}
    assert "s3:ReadOnly" in report["stages"][0]["detail"]  # the closest template is suggested
    assert leftovers() == {}


def test_run_instances_failing_fails_running_and_removes_the_peer_and_the_role(
        aws: MotoServer, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from botocore.exceptions import ClientError

    runs: list[str] = []

    def capacity(service: str, operation: str) -> None:
        if operation == "RunInstances":
            runs.append(operation)
            if len(runs) == 2:  # the peer launches; the instance under test finds no capacity
                raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity",
                                             "Message": "no t4g.nano capacity"}}, "RunInstances")

    controller_aws.CALL_HOOKS.append(capacity)
    try:
        code, report = _in_process(capsys, *FAST)
    finally:
        controller_aws.CALL_HOOKS.remove(capacity)
    assert code == 6
    running = report["stages"][1]
    assert running["verdict"] == "failed" and "InsufficientInstanceCapacity" in running["detail"]
    assert running["fix"].startswith("check the region's EC2 quotas")
    assert any("permission-proof peer" in r for r in report["cleanup"]["removed"])
    assert leftovers() == {}


def test_an_agent_that_never_comes_up_fails_the_agent_stage(
        aws: MotoServer, home: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.selftest import run as selftest_run

    monkeypatch.setattr(selftest_run.Run, "start_local", lambda *_a, **_k: None)
    code, report = _in_process(capsys, "--local-agent", "--ttl", "15s", "--json")
    assert code == 6
    verdicts = _verdicts(report)
    assert verdicts["agent"] == "failed" and verdicts["permissions"] == "not-reached"
    assert "spawn:agent-status" in report["stages"][3]["detail"]
    assert leftovers() == {}


def test_a_role_refused_on_its_own_instance_fails_the_permission_stage(
        aws: MotoServer, home: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.selftest import proof

    monkeypatch.setattr(proof, "PROGRAM", DENIED_ON_ITSELF)
    code, report = _in_process(capsys, *FAST)
    assert code == 6
    stage = report["stages"][4]
    assert stage["verdict"] == "failed" and "UnauthorizedOperation" in stage["detail"]
    assert "spawn iam agent-policy" in stage["fix"]
    assert leftovers() == {}


def test_no_warning_fails_the_warning_stage(aws: MotoServer, home: Path,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.sandbox import agent as sandbox_agent

    monkeypatch.setattr(sandbox_agent, "SANDBOX_WARNINGS", ())  # the real agent, told to give none
    code, report = _in_process(capsys, *FAST)
    assert code == 6
    verdicts = _verdicts(report)
    assert verdicts["status"] == "passed" and verdicts["warning"] == "failed"
    assert leftovers() == {}


@pytest.fixture
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from controller.selftest import run as selftest_run

    monkeypatch.setattr(selftest_run, "END_GRACE", timedelta(seconds=5))


def _kill_agent_when(status_prefix: str, instance_hint: list[str]) -> threading.Thread:
    """A fault: the agent process dies once its status tag shows ``status_prefix``."""
    import boto3
    import psutil

    def watch() -> None:
        ec2 = boto3.client("ec2", region_name=REGION)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            tags = [t for r in ec2.describe_instances(Filters=[
                {"Name": "tag:Name", "Values": ["spawn-selftest"]}])["Reservations"]
                for i in r["Instances"] for t in i.get("Tags", []) if t["Key"] == "spawn:agent-status"]
            if any(t["Value"].startswith(status_prefix) for t in tags):
                for child in psutil.Process().children(recursive=True):
                    if "spored.cli" in " ".join(child.cmdline()):
                        instance_hint.append(str(child.pid))
                        child.kill()
                return
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_an_agent_that_dies_after_warning_fails_agent_ends(
        aws: MotoServer, home: Path, capsys: pytest.CaptureFixture[str], short_grace: None) -> None:
    killed: list[str] = []
    watcher = _kill_agent_when("warning", killed)
    code, report = _in_process(capsys, *FAST)
    watcher.join(timeout=5)
    assert killed, "the agent was never seen warning"
    assert code == 6
    verdicts = _verdicts(report)
    assert verdicts["warning"] == "passed" and verdicts["agent-ends"] == "failed"
    assert "after the deadline" in report["stages"][7]["detail"]
    assert leftovers() == {}


def test_an_instance_stuck_shutting_down_fails_terminated(
        aws: MotoServer, home: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, short_grace: None) -> None:
    from controller.selftest import run as selftest_run

    real = selftest_run.Instance.describe

    def stuck(self: Any) -> dict[str, Any]:
        found = real(self)
        if found["State"]["Name"] == "terminated":  # EC2 never finishes, as seen from here
            found["State"] = {"Name": "shutting-down", "Code": 32}
        return found

    monkeypatch.setattr(selftest_run.Instance, "describe", stuck)
    code, report = _in_process(capsys, *FAST)
    assert code == 6
    verdicts = _verdicts(report)
    assert verdicts["agent-ends"] == "passed" and verdicts["terminated"] == "failed"
    assert leftovers() == {}


def test_the_run_ends_everything_at_its_time_bound(
        aws: MotoServer, home: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from controller.selftest import run as selftest_run

    monkeypatch.setattr(selftest_run, "MAX_RUN", timedelta(seconds=12))
    monkeypatch.setattr(selftest_run.Run, "start_local", lambda *_a, **_k: None)  # nothing will end it
    code, report = _in_process(capsys, "--local-agent", "--ttl", "5m", "--json")
    assert code == 6
    assert "bound" in (report["error"] or "")
    assert leftovers() == {}


def test_ctrl_c_cleans_up_everything(aws: MotoServer, home: Path) -> None:
    proc = subprocess.Popen([SPAWN, "selftest", "--local-agent", "--ttl", "2m", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))
    assert proc.stderr is not None and proc.stdout is not None
    seen: list[str] = []
    ready = threading.Event()

    def read(stream: Any) -> None:
        for line in stream:
            seen.append(line)
            if line.startswith("selftest: agent: passed"):
                ready.set()

    reader = threading.Thread(target=read, args=(proc.stderr,), daemon=True)
    reader.start()
    assert ready.wait(timeout=180), "".join(seen[-30:])
    proc.send_signal(signal.SIGINT)
    out = proc.stdout.read()
    proc.wait(timeout=180)
    reader.join(timeout=10)
    assert proc.returncode == 130, (out[-3000:], "".join(seen[-30:]))
    report = json.loads(out)
    assert report["interrupted"] is True and report["ok"] is False
    assert report["cleanup"]["failed"] == []
    assert any("interrupted: cleaning up" in line for line in seen)
    assert leftovers() == {}
