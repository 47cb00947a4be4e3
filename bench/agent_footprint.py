"""spored's footprint and reaction times, measured against a moto server and the IMDS emulator.

    .venv/bin/python bench/agent_footprint.py [--steady 300] [--runs 5] [--agent dev|bundle|both]
        [--baseline-source DIR] [--json]

Every agent runs through ``AgentProcess`` (controller/sandbox/agent.py, the harness the tests use),
its runtime directory on a tmpfs (/dev/shm) as ``/run/spored`` is on an instance.

1. Steady state at the default intervals (tick 30 s, spot poll 2 s on spot only, tag refresh
   2 min / 5 min): agents side by side for ``--steady`` seconds; RSS (psutil) at the end, CPU as a
   percentage of one core over the window (after a warm-up), IMDS requests per minute (the
   emulator's request log, counted over the window) and EC2 API calls per instance-hour (the
   agent's ``aws.call`` log events in the window). The agents:
   - ``bundle/...``: the agent as an instance gets it: the bundle this installation builds
     (``controller.bundle.ensure_bundle``), installed offline into a fresh venv the way
     install.sh does (only the agent and its locked dependencies: no rich);
     on-demand with tags in metadata, on-demand with tags via the API, spot with tags in metadata;
   - ``dev/on-demand``: the agent from this venv (the controller's, where rich is installed);
   - ``baseline/on-demand`` (with ``--baseline-source DIR``, a checkout of an older commit): the
     older agent code from this venv, measured in the same run for comparison.
2. Reaction times over ``--runs`` fresh agents (from this venv): deadline -> TerminateInstances
   call (the agent's ``aws.call`` timestamp minus the deadline), and spot notice armed -> pre-stop
   hook running on a spot instance (the hook's own timestamp minus the moment the notice was armed).

Targets: RSS <= 32 MiB (bundle, tags in metadata); on-demand idle <= 0.02 % of a core and <= 6
IMDS requests a minute; 0 EC2 calls/h with tags in metadata and <= 12 without; both latencies
<= 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from controller.sandbox.agent import AgentDirs, AgentProcess

os.environ.update({
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
})

REGION = "us-east-1"
CHILD_DROPS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
               "AWS_EC2_METADATA_DISABLED", "AWS_REGION", "AWS_DEFAULT_REGION", "NOTIFY_SOCKET")
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ec2() -> Any:
    import boto3

    return boto3.client("ec2", region_name=REGION)


def ensure_profile() -> None:
    import boto3

    iam = boto3.client("iam")
    try:
        iam.create_role(RoleName="bench-role", AssumeRolePolicyDocument=TRUST)
        iam.create_instance_profile(InstanceProfileName="bench-profile")
        iam.add_role_to_instance_profile(InstanceProfileName="bench-profile", RoleName="bench-role")
    except iam.exceptions.EntityAlreadyExistsException:
        pass


def launch(tags: dict[str, str], *, metadata_tags: bool, spot: bool = False) -> str:
    resp = ec2().run_instances(
        ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="t3.micro",
        IamInstanceProfile={"Name": "bench-profile"},
        MetadataOptions={"HttpTokens": "required",
                         "InstanceMetadataTags": "enabled" if metadata_tags else "disabled"},
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
        **({"InstanceMarketOptions": {"MarketType": "spot"}} if spot else {}))
    return str(resp["Instances"][0]["InstanceId"])


@dataclass(frozen=True)
class AgentKind:
    """How to start an agent: which python, and an optional source tree in front of sys.path."""

    label: str
    python: str = sys.executable
    source: str | None = None


def start_agent(workdir: Path, moto_url: str, imds_url: str, config: str,
                kind: AgentKind | None = None) -> AgentProcess:
    """The agent as ``AgentProcess`` runs it (the harness the tests use), its runtime directory on
    a tmpfs when the machine has one (/dev/shm), as ``/run/spored`` is on an instance."""
    shm = Path("/dev/shm")
    runtime = Path(tempfile.mkdtemp(prefix="spored-bench-run-", dir=shm)) if shm.is_dir() else None
    dirs = AgentDirs(workdir, runtime_dir=runtime)
    dirs.create()
    dirs.config.write_text(config, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in CHILD_DROPS}
    env.update({"AWS_ENDPOINT_URL": moto_url, "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds_url})
    kind = kind or AgentKind("dev")
    env.pop("PYTHONPATH", None)
    if kind.source:
        env["PYTHONPATH"] = kind.source
    # cwd: the work folder, so a checkout in the current directory is not on the agent's path
    agent = AgentProcess(dirs, env, python=kind.python, cwd=workdir)
    agent.start()
    return agent


def wait_ready(agent: AgentProcess, timeout: float = 60, *, proof: bool = False) -> None:
    """The agent knows its instance; with ``proof``, its start-up permission proof has also run
    (a child whose DryRun calls, and the credentials it fetches from instance metadata, belong to
    the start, not to the steady state)."""
    agent.wait_status(lambda status: bool(status.get("instance_id")), timeout, "the agent's identity")
    if proof:
        agent.wait_for("permissions.checked", 180)


def real_call(operation: str) -> Any:
    """An ``aws.call`` event for ``operation`` that is not a DryRun (the permission proof's)."""
    return lambda e: e.get("operation") == operation and not e.get("dry_run")


def stop(agent: AgentProcess) -> None:
    agent.stop()
    if agent.dirs.runtime_dir is not None:
        shutil.rmtree(agent.dirs.runtime_dir, ignore_errors=True)


def ts(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00"))


def bundle_agent(work: Path) -> AgentKind:
    """The agent installed from this installation's bundle into a fresh venv (as install.sh does)."""
    from controller import bundle

    built = bundle.ensure_bundle(progress=lambda m: print(m, file=sys.stderr))
    python = bundle.install_agent(built.path, work / "bundle-venv")
    return AgentKind("bundle", python=str(python))


def steady_state(moto_url: str, work: Path, seconds: float, warmup: float,
                 kinds: list[AgentKind]) -> dict[str, Any]:
    import psutil

    from controller.sandbox.imds_emulator import ImdsEmulator

    results: dict[str, Any] = {}
    agents: dict[str, tuple[AgentProcess, Any, Any]] = {}
    for kind in kinds:
        modes = [("on-demand", True, False)]
        if kind.label == "bundle":
            modes += [("on-demand-tags-via-api", False, False), ("spot", True, True)]
        for mode, in_metadata, spot in modes:
            iid = launch({"spawn:managed": "true", "spawn:ttl": "1d", "spawn:idle-timeout": "2h"},
                         metadata_tags=in_metadata, spot=spot)
            emu = ImdsEmulator(iid, REGION, moto_url).start()
            name = f"{kind.label}/{mode}"
            agent = start_agent(work / name.replace("/", "-"), moto_url, emu.url, "wall = false\n", kind)
            agents[name] = (agent, psutil.Process(agent.pid), emu)
    for agent, _, _ in agents.values():
        wait_ready(agent, proof=True)
    time.sleep(warmup)
    start_wall = time.monotonic()
    start_at = datetime.now(UTC)
    cpu0 = {m: p.cpu_times() for m, (_, p, _) in agents.items()}
    imds0 = {m: len(emu.log.records()) for m, (_, _, emu) in agents.items()}
    peak = dict.fromkeys(agents, 0)
    while time.monotonic() - start_wall < seconds:
        for mode, (_, proc, _) in agents.items():
            peak[mode] = max(peak[mode], proc.memory_info().rss)
        time.sleep(5)
    window = time.monotonic() - start_wall
    for mode, (agent, proc, emu) in agents.items():
        cpu1 = proc.cpu_times()
        imds = len(emu.log.records()) - imds0[mode]
        used = (cpu1.user - cpu0[mode].user) + (cpu1.system - cpu0[mode].system)
        calls = [e for e in agent.events("aws.call") if ts(e) >= start_at]
        startup_calls = [e for e in agent.events("aws.call") if ts(e) < start_at]
        status = agent.status()
        results[mode] = {
            "rss_mib": round(proc.memory_info().rss / MIB, 1),
            "rss_peak_mib": round(peak[mode] / MIB, 1),
            "cpu_percent_of_core": round(100 * used / window, 4),
            "imds_requests_in_window": imds,
            "imds_requests_per_minute": round(imds * 60 / window, 2),
            "ec2_calls_in_window": len(calls),
            "ec2_calls_per_hour": round(len(calls) * 3600 / window, 1),
            "ec2_calls_at_startup": len(startup_calls),
            "boto3_loaded": status.get("boto3_loaded"),
            "notice_poll": status.get("notice_poll"),
            "window_s": round(window),
        }
        stop(agent)
        emu.stop()
    return results


def latencies(moto_url: str, work: Path, runs: int) -> dict[str, Any]:
    from controller.sandbox.imds_emulator import ImdsEmulator
    from spored.contract import format_timestamp

    deadline_lag: list[float] = []
    hook_lag: list[float] = []
    for run in range(runs):
        # deadline -> TerminateInstances
        # The deadline is known well ahead (as at launch or after `spawn extend`), 40 s out.
        deadline = (datetime.now(UTC) + timedelta(seconds=40)).replace(microsecond=0)
        iid = launch({"spawn:managed": "true", "spawn:expires-at": format_timestamp(deadline)},
                     metadata_tags=True)
        with ImdsEmulator(iid, REGION, moto_url) as emu:
            agent = start_agent(work / f"deadline-{run}", moto_url, emu.url, "wall = false\n")
            try:
                wait_ready(agent)
                call = agent.wait_for("aws.call", 90, real_call("TerminateInstances"))
                deadline_lag.append((ts(call) - deadline).total_seconds())
            except TimeoutError:
                pass  # counted: "measured" stays below "of"
            finally:
                stop(agent)
        # spot notice -> hook
        iid = launch({"spawn:managed": "true", "spawn:ttl": "1d"}, metadata_tags=True, spot=True)
        hook_dir = work / f"spot-{run}"
        hook_dir.mkdir(parents=True, exist_ok=True)
        marker = hook_dir / "hook-started"
        hook = hook_dir / "hook.sh"
        hook.write_text(f"#!/bin/sh\ndate +%s.%N > {marker}.tmp\nmv {marker}.tmp {marker}\n")
        hook.chmod(0o755)
        with ImdsEmulator(iid, REGION, moto_url) as emu:
            agent = start_agent(hook_dir, moto_url, emu.url, f'wall = false\npre_stop_hook = "{hook}"\n')
            try:
                wait_ready(agent)
                time.sleep(3)
                armed = time.time()
                emu.arm_spot("terminate", datetime.now(UTC) + timedelta(minutes=2))
                end = time.monotonic() + 30
                while time.monotonic() < end and not marker.exists():
                    time.sleep(0.05)
                if marker.exists():
                    hook_lag.append(float(marker.read_text()) - armed)
            finally:
                stop(agent)
    return {
        "runs": runs,
        "deadline_to_terminate_call_s": _stats(deadline_lag, runs),
        "spot_notice_to_hook_s": _stats(hook_lag, runs),
    }


def _stats(values: list[float], runs: int) -> dict[str, Any]:
    if not values:
        return {"measured": 0, "of": runs}
    return {"measured": len(values), "of": runs, "min": round(min(values), 3),
            "median": round(statistics.median(values), 3), "max": round(max(values), 3),
            "all": [round(v, 3) for v in values]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steady", type=float, default=300, help="steady-state window, seconds")
    parser.add_argument("--warmup", type=float, default=30, help="seconds after READY before measuring")
    parser.add_argument("--runs", type=int, default=5, help="repetitions for the latencies")
    parser.add_argument("--agent", choices=["dev", "bundle", "both"], default="both",
                        help="steady state: the agent from this venv, from the bundle, or both")
    parser.add_argument("--baseline-source", metavar="DIR",
                        help="also measure the agent code in DIR (a checkout of an older commit), "
                             "from this venv, in the same steady-state run")
    parser.add_argument("--skip-steady", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    moto_url = f"http://127.0.0.1:{port}"
    os.environ["AWS_ENDPOINT_URL"] = moto_url
    report: dict[str, Any] = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                              "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}
    try:
        ensure_profile()
        with tempfile.TemporaryDirectory(prefix="spored-bench-") as tmp:
            work = Path(tmp)
            if not args.skip_steady:
                kinds = []
                if args.baseline_source:
                    kinds.append(AgentKind("baseline", source=str(Path(args.baseline_source).resolve())))
                if args.agent in ("dev", "both"):
                    kinds.append(AgentKind("dev"))
                if args.agent in ("bundle", "both"):
                    kinds.append(bundle_agent(work))
                report["steady_state"] = steady_state(moto_url, work, args.steady, args.warmup, kinds)
            if not args.skip_latency:
                report["latency"] = latencies(moto_url, work, args.runs)
    finally:
        server.stop()
    print(json.dumps(report, indent=1 if not args.json else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
