"""`spawn selftest`: launch through `spawn launch`'s own code, follow the chain, clean up everything.

Order: budget printed -> launch facts gathered (reads; the role composed and linted) -> a second,
agent-less instance launched for the permission proof -> the instance under test launched by
``execute.execute`` with a short TTL and the proof as its user-data -> stages followed live from
this workstation (tags, state, console output) -> cleanup of everything this run created, also
on failure, on Ctrl-C and when the run reaches its time bound.

Every write is recorded in launch's own ``Ledger``; cleanup is its rollback (newest first: the
instances are terminated and waited for before the security group, key pair and role go).

``--local-agent`` is for the local cloud (moto): EC2 does not run user-data there, so the
sandbox's agent runs as a local process against an IMDS emulator, and the proof runs as a local
process with the emulator's role credentials. Stages only AWS can decide say so.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from controller import aws
from controller.launch import execute, launch_flags, pricing
from controller.output import Output, Relay
from controller.selftest import proof
from controller.selftest.stages import (
    DEFAULT_TTL,
    INSTANCE_TYPES,
    MAX_RUN,
    STAGES,
    Budget,
    Report,
    StageResult,
    Verdict,
    render,
)
from spored.contract import (
    MANAGED_VALUE,
    TAG_AGENT_STATUS,
    TAG_MANAGED,
    TAG_NAME,
    TAG_TTL,
    format_duration,
    format_timestamp,
    parse_duration,
    parse_timestamp,
)
from spored.errors import ExitStatus, SpawnError, UsageError, ValidationError, from_aws
from spored.permission_proof import Verdict as AgentVerdict
from spored.permission_proof import find_reported

SELFTEST_NAME = "spawn-selftest"
TAG_SELFTEST = "spawn:selftest"
MIN_TTL_AWS = timedelta(minutes=2)   # boot, install and a warning must fit before the deadline
MIN_TTL_LOCAL = timedelta(seconds=15)
MAX_TTL = timedelta(minutes=5)
# After the deadline: how long the agent has to call TerminateInstances, and EC2 to finish.
END_GRACE = timedelta(seconds=90)
POLL_AWS = 5.0
POLL_LOCAL = 0.5
ENDING = ("shutting-down", "terminated")
# EC2's StateReason when TerminateInstances/StopInstances ended the instance, as opposed to
# "Client.InstanceInitiatedShutdown" for an OS power-off (Amazon EC2 API Reference, StateReason).
API_SHUTDOWN = "Client.UserInitiatedShutdown"
# What the user-data prints on the serial console once its power-off failsafe is armed.
FAILSAFE_ARMED = "spawn-failsafe: power-off armed"


_TRANSITION_RE = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) GMT\)")


def transition_time(reason: str) -> datetime | None:
    """When EC2 says the transition began: its StateTransitionReason reads like
    ``User initiated (2026-11-30 07:48:57 GMT)``; None when it carries no time."""
    match = _TRANSITION_RE.search(reason)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


class SelftestFailed(SpawnError):
    code = "selftest-failed"
    exit_status = ExitStatus.SELFTEST


@dataclass(frozen=True)
class Options:
    instance_type: str
    region: str | None
    ttl: timedelta
    keep_role: bool
    local_agent: bool
    dry_run: bool


def options(args: argparse.Namespace) -> Options:
    """Checked before anything is read or created (exit 2 naming the flag)."""
    if args.instance_type not in INSTANCE_TYPES:
        raise ValidationError("--instance-type", f"{args.instance_type!r}; accepted: "
                              + " | ".join(INSTANCE_TYPES))
    ttl = parse_duration(args.ttl, field="--ttl") if args.ttl else DEFAULT_TTL
    local = bool(args.local_agent)
    low = MIN_TTL_LOCAL if local else MIN_TTL_AWS
    if not low <= ttl <= MAX_TTL:
        raise ValidationError("--ttl", f"{format_duration(ttl)}; accepted: {format_duration(low)} to "
                              f"{format_duration(MAX_TTL)}" + ("" if local else " (on AWS)"))
    if local:
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
        host = urlparse(endpoint).hostname or ""
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise UsageError("--local-agent: only against a local cloud (AWS_ENDPOINT_URL on loopback, "
                             f"e.g. `spawn sandbox --keep`); AWS_ENDPOINT_URL is {endpoint or 'unset'}",
                             hint="drop --local-agent to test in your AWS account")
    return Options(instance_type=args.instance_type, region=args.region, ttl=ttl,
                   keep_role=bool(args.keep_role), local_agent=local, dry_run=bool(args.dry_run))


def launch_argv(opts: Options, user_data: Path, agent_bundle: Path | None = None) -> list[str]:
    """The `spawn launch` a person would type for the instance under test."""
    argv = ["launch", "--instance-type", opts.instance_type, "--name", SELFTEST_NAME,
            "--ttl", format_duration(opts.ttl), "--user-data", str(user_data), "--no-wait", "--json"]
    if opts.region:
        argv += ["--region", opts.region]
    if agent_bundle is not None:
        argv += ["--agent-bundle", str(agent_bundle)]
    return argv


def _parse_launch(argv: list[str], args: argparse.Namespace) -> argparse.Namespace:
    from controller.cli import build_parser

    launch_args = build_parser().parse_args(argv)
    # The user's usual IAM flags apply to the instance under test.
    for dest in ("iam_policy", "iam_policy_file", "iam_managed_policies", "iam_role",
                 "iam_permissions_boundary", "force"):
        if hasattr(args, dest) and getattr(args, dest):
            setattr(launch_args, dest, getattr(args, dest))
    return launch_args


class Clock:
    """The run's time bound (monotonic) and the stage stopwatch."""

    def __init__(self, limit: timedelta) -> None:
        self.start = time.monotonic()
        self.end = self.start + limit.total_seconds()

    def left(self) -> float:
        return self.end - time.monotonic()

    def over(self) -> bool:
        return self.left() <= 0


@dataclass
class Instance:
    """What the workstation sees of the instance under test, read through the EC2 API."""

    ec2: Any
    instance_id: str
    interval: float

    def describe(self) -> dict[str, Any]:
        resp = self.ec2.describe_instances(InstanceIds=[self.instance_id])
        return dict(resp["Reservations"][0]["Instances"][0])

    def tags(self, inst: dict[str, Any] | None = None) -> dict[str, str]:
        inst = inst if inst is not None else self.describe()
        return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}

    def console(self) -> list[str]:
        import base64

        try:
            resp = self.ec2.get_console_output(InstanceId=self.instance_id, Latest=True)
        except Exception as exc:
            if getattr(exc, "response", None) is None:
                raise
            resp = self.ec2.get_console_output(InstanceId=self.instance_id)
        text = resp.get("Output") or ""
        with contextlib.suppress(ValueError):
            text = base64.b64decode(text).decode("utf-8", errors="replace")
        return text.splitlines()


class Observer(threading.Thread):
    """Watches the instance through the EC2 API from launch on and records what it saw first:
    each agent status (``ready``, ``warning``, ``acting``, ...) with when it was seen, the moment
    the instance began to end, and (on AWS) the console output."""

    def __init__(self, inst: Instance, interval: float, *, console: bool) -> None:
        super().__init__(name="selftest-observer", daemon=True)
        self.inst = inst
        self.interval = interval
        self.read_console = console
        self.first_status: dict[str, tuple[float, str]] = {}
        self.status_values: list[str] = []
        self.ended: tuple[dict[str, Any], float] | None = None
        self.terminated = False
        self.state = "unknown"
        self.console_lines: list[str] = []
        self.last_error: str | None = None
        self.changed = threading.Condition()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.observe()
            except Exception as exc:  # a failed read is retried; the stage that waits reports it
                self.last_error = f"{type(exc).__name__}: {exc}"
            with self.changed:
                self.changed.notify_all()
            self._halt.wait(self.interval)

    def observe(self) -> None:
        described = self.inst.describe()
        now = time.monotonic()
        self.state = str(described["State"]["Name"])
        value = self.inst.tags(described).get(TAG_AGENT_STATUS)
        if value:
            self.first_status.setdefault(value.split(" ", 1)[0], (now, value))
            if value not in self.status_values:
                self.status_values.append(value)
        if self.state in ENDING and self.ended is None:
            self.ended = (described, now)
        self.terminated = self.state == "terminated"
        if self.read_console and not self.terminated:
            self.console_lines = self.inst.console()

    def first_status_value(self) -> str | None:
        if not self.first_status:
            return None
        return min(self.first_status.values())[1]

    def trouble(self) -> str:
        return f" (last read error: {self.last_error})" if self.last_error else ""

    def wait(self, clock: Clock, until: float, check: Callable[[], Any]) -> Any:
        """Until ``check`` returns something truthy, the monotonic ``until`` or the run's bound."""
        while True:
            found = check()
            if found:
                return found
            left = min(until, clock.end) - time.monotonic()
            if left <= 0:
                return None
            with self.changed:
                self.changed.wait(timeout=min(left, self.interval))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)


class Run:
    """One selftest run: its report, its ledger of created things and the stages in order."""

    def __init__(self, opts: Options, out: Output, args: argparse.Namespace) -> None:
        self.opts = opts
        self.out = out
        self.args = args
        self.clock = Clock(MAX_RUN)
        self.ledger = execute.Ledger()
        self.run_id = f"st-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"
        self.report: Report | None = None
        self.interval = POLL_LOCAL if opts.local_agent else POLL_AWS
        self.local: contextlib.ExitStack = contextlib.ExitStack()
        self.proof_output: list[str] = []
        self.peer_is_real = False
        self.local_env: dict[str, str] = {}
        self.timed_out = False
        self.deadline: datetime | None = None
        self.step = "role"

    # -- stages -------------------------------------------------------------------------------
    def stage(self, name: str) -> _StageTimer:
        assert self.report is not None  # noqa: S101 - set by run()
        return _StageTimer(self.report, name, self.update)

    def update(self, step: str, message: str) -> None:
        self.out.info(f"selftest: {step}: {message}")

    def execute(self, work: Path) -> None:
        report = self.report
        assert report is not None  # noqa: S101 - set by run()
        user_data = work / "proof.sh"
        # Rendered once with a placeholder peer so launch's size checks see the real length.
        user_data.write_bytes(proof.user_data("i-00000000000000000", report.region))
        bundle = None
        if self.opts.local_agent:  # the local agent runs from this installation, as in the sandbox
            from controller.sandbox import local_bundle

            bundle = local_bundle.build(work / "bundle")
        launch_args = _parse_launch(launch_argv(self.opts, user_data, bundle), self.args)
        lf = launch_flags.validate(launch_args)
        quiet = Relay(on_warning=self.out.warn, on_info=self.out.info)

        def on_launch_step(step: str, message: str) -> None:
            # Launch lints the composed role during its validation step: that part is the role's.
            self.step = "IAM" if step == "validate" and message.startswith("linting") else step
            self.update(f"launch {step}", message)

        with self.stage("role") as role:
            try:
                g = execute.gather(launch_args, lf, on_launch_step)
            except SpawnError as exc:
                if self.step in ("role", "IAM"):
                    raise
                role.finish(Verdict.PASSED, "composed and linted")
                raise _StageError("running", exc) from exc
            report.region = g.region
            role_name = getattr(g.iam_plan, "role_name", None) or "(per plan)"
            role.finish(Verdict.PASSED, f"role {role_name}: composed and linted, no errors")

        ec2 = aws.client("ec2", g.region)
        peer = self.launch_peer(ec2, g)
        user_data.write_bytes(proof.user_data(peer, g.region))
        g.flags = dataclasses.replace(g.flags, user_data=user_data.read_bytes())

        with self.stage("running") as running:
            try:
                result = execute.execute(g, quiet, on_launch_step, ledger=self.ledger, disposable=True)
            except SpawnError as exc:
                if self.step == "IAM":
                    report.record(StageResult("role", Verdict.FAILED, exc.message))
                    raise _StageError("role", exc, recorded=True) from exc
                raise
            instance_id = str(result["instances"][0]["instance_id"])
            report.instance_id = instance_id
            self.deadline = parse_timestamp(str(result["deadline"])) if result.get("deadline") else None
            running.finish(Verdict.PASSED, f"{instance_id} ({result['instance_type']}, "
                           f"{result['image_id']}) running; deadline {result.get('deadline')}")
        inst = Instance(ec2, instance_id, self.interval)
        if self.opts.local_agent:
            self.start_local(instance_id, g.region, peer, work)
        self.follow(inst, g.region, peer)

    def _keep_kinds(self) -> frozenset[str]:
        return frozenset({"iam"}) if self.opts.keep_role else frozenset()

    def launch_peer(self, ec2: Any, g: Any) -> str:
        """A second instance tagged managed but with no agent and no role: the role under test must
        not be able to end or tag it. Ends itself after 10 minutes whatever happens here."""
        params: dict[str, Any] = {
            "ImageId": g.image.image_id, "InstanceType": g.flags.instance_type, "MinCount": 1,
            "MaxCount": 1, "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "UserData": "#!/bin/sh\nshutdown -P +10\n",
            "TagSpecifications": [{"ResourceType": "instance", "Tags": [
                {"Key": TAG_NAME, "Value": f"{SELFTEST_NAME}-peer"},
                {"Key": TAG_MANAGED, "Value": MANAGED_VALUE},
                {"Key": TAG_TTL, "Value": "10m"},
                {"Key": TAG_SELFTEST, "Value": self.run_id}]}],
        }
        if g.subnet_id:
            params["SubnetId"] = g.subnet_id
        try:
            resp = ec2.run_instances(**params)
        except Exception as exc:
            if getattr(exc, "response", None) is None:
                raise
            self.out.warn(f"could not launch the second instance for the permission proof "
                          f"({from_aws(exc, action='RunInstances').message}); a made-up instance id "
                          "is used and that part of the proof is inconclusive")
            return "i-" + secrets.token_hex(9)[:17]
        peer = str(resp["Instances"][0]["InstanceId"])
        assert self.report is not None  # noqa: S101 - set by run()
        self.report.peer_id = peer
        self.peer_is_real = True
        self.ledger.add(f"instance {peer} (permission-proof peer)",
                        lambda: execute._terminate_and_wait(ec2, [peer]), kind="instance")
        self.update("peer", f"{peer} launched for the permission proof (no agent, no role)")
        return peer

    def start_local(self, instance_id: str, region: str, peer: str, work: Path) -> None:
        """The local cloud: the sandbox's agent and an IMDS emulator stand in for EC2's boot."""
        from controller.sandbox import agent as sandbox_agent
        from controller.sandbox import launcher
        from controller.sandbox.cloud import agent_environment
        from controller.sandbox.imds_emulator import ImdsEmulator

        endpoint = os.environ["AWS_ENDPOINT_URL"]
        emulator = ImdsEmulator(instance_id, region, endpoint).start()
        self.local.callback(emulator.stop)
        stored = launcher.stored_launch(instance_id, region)
        dirs = sandbox_agent.AgentDirs(work / "agent")
        dirs.create()
        cfg = sandbox_agent.sandbox_config(stored.config_toml, dirs, imds_url=emulator.url,
                                           ec2_endpoint=endpoint, wall=False)
        sandbox_agent.write_config(cfg, dirs)
        env = agent_environment(endpoint, emulator.url, region)
        agent = sandbox_agent.AgentProcess(dirs, env)
        agent.start()
        self.local.callback(agent.stop)
        self.local_env = env
        self.update("local", f"the local cloud does not run user-data: agent and IMDS emulator for "
                    f"{instance_id} run on this machine")

    def run_local_proof(self, peer: str, region: str) -> None:
        done = subprocess.run([sys.executable, "-", *proof.arguments(peer, region)], input=proof.PROGRAM,
                              env=self.local_env, capture_output=True, text=True, timeout=120, check=False)
        self.proof_output = done.stdout.splitlines()
        if done.returncode != 0:
            self.proof_output.append(f"{proof.PREFIX} proof failed: {done.stderr.strip()[-300:]}")

    def follow(self, inst: Instance, region: str, peer: str) -> None:
        """Judge the stages in order from what the observer records; it watches from launch on, so
        a slow stage never hides a short-lived status such as the warning.

        Each stage is one method below; a failed stage records its verdict and raises
        ``_StageError``, which ends the run there."""
        local = self.opts.local_agent
        deadline = self.deadline
        assert deadline is not None  # noqa: S101 - launched with --ttl
        deadline_mono = time.monotonic() + (deadline - datetime.now(UTC)).total_seconds()
        observer = Observer(inst, self.interval, console=not local)
        observer.start()
        self.local.callback(observer.stop)
        prover = None
        if local:
            prover = threading.Thread(target=self.run_local_proof, args=(peer, region), daemon=True)
            prover.start()
        self._judge_failsafe(observer, deadline_mono)
        self._judge_agent(observer, deadline_mono)
        self._judge_permissions(observer, deadline_mono, prover)
        self._judge_status(inst, region)
        self._judge_warning(observer, deadline_mono)
        self._judge_agent_ends(observer, deadline, deadline_mono)
        self._judge_terminated(observer)

    def _judge_failsafe(self, observer: Observer, deadline_mono: float) -> None:
        """The user-data's OS-level failsafe line in the console (an EC2 instance only)."""
        with self.stage("failsafe") as stage:
            if self.opts.local_agent:
                stage.finish(Verdict.NOT_DECIDED_HERE,
                             "the local cloud does not run user-data; only an EC2 instance arms it")
            else:
                armed = observer.wait(self.clock, deadline_mono, lambda: [
                    ln for ln in observer.console_lines if FAILSAFE_ARMED in ln])
                if not armed:
                    stage.finish(Verdict.FAILED, "no failsafe line in the console output before the deadline")
                    raise _StageError("failsafe", None, recorded=True)
                stage.finish(Verdict.PASSED, armed[-1].strip())

    def _judge_agent(self, observer: Observer, deadline_mono: float) -> None:
        """The agent's first status tag before the deadline."""
        with self.stage("agent") as stage:
            first = observer.wait(self.clock, deadline_mono, observer.first_status_value)
            if not first:
                stage.finish(Verdict.FAILED, f"no {TAG_AGENT_STATUS} tag before the deadline"
                             + observer.trouble())
                raise _StageError("agent", None, recorded=True)
            stage.finish(Verdict.PASSED, f"{TAG_AGENT_STATUS} = {first}"
                         + (" (the sandbox's agent, as a local process)" if self.opts.local_agent else ""))

    def _judge_permissions(self, observer: Observer, deadline_mono: float,
                           prover: threading.Thread | None) -> None:
        """The permission proof (the local prover's output, else the console's proof lines),
        overruled by a denial the agent's own check reported."""
        local = self.opts.local_agent
        with self.stage("permissions") as stage:
            if prover is not None:
                observer.wait(self.clock, deadline_mono + END_GRACE.total_seconds(),
                              lambda: not prover.is_alive())
                lines, done = proof.parse(self.proof_output)
            else:
                def finished() -> tuple[list[proof.ProofLine], bool] | None:
                    parsed = proof.parse(observer.console_lines)
                    return parsed if parsed[1] else None

                found = observer.wait(self.clock, deadline_mono, finished)
                lines, done = found if found else ([], False)
            verdict, detail = proof.judge(lines, done, local=local, peer_is_real=self.peer_is_real)
            # The agent's own proof at start (spored.permission_proof): its console line, or the
            # status tag that carries the same text when CreateTags is allowed.
            agent_said = find_reported("\n".join([*observer.console_lines, *observer.status_values]))
            if agent_said is not None and agent_said.verdict is AgentVerdict.DENIED:
                verdict, detail = Verdict.FAILED, f"the agent's own check: {agent_said.text()}; {detail}"
            elif agent_said is not None:
                detail = f"{detail}; the agent's own check: {agent_said.text()}"
            stage.finish(verdict, detail)
            if verdict is Verdict.FAILED:
                raise _StageError("permissions", None, recorded=True)

    def _judge_status(self, inst: Instance, region: str) -> None:
        """`spawn status` shows the agent."""
        with self.stage("status") as stage:
            from controller.lifecycle.find import find
            from controller.lifecycle.status import status as describe_status

            found_status = describe_status(find([inst.instance_id], [region])[0])
            if not found_status.get("agent") or str(found_status["agent"]).startswith("unknown"):
                stage.finish(Verdict.FAILED, f"`spawn status` shows agent: {found_status.get('agent')}")
                raise _StageError("status", None, recorded=True)
            stage.finish(Verdict.PASSED, f"`spawn status`: agent {found_status['agent']}, deadline "
                         f"{found_status.get('deadline')}")

    def _judge_warning(self, observer: Observer, deadline_mono: float) -> None:
        """The agent's warning status, seen before the deadline."""
        grace = END_GRACE.total_seconds()
        with self.stage("warning") as stage:
            observer.wait(self.clock, deadline_mono + grace, lambda: (
                "warning" in observer.first_status or "acting" in observer.first_status or observer.ended))
            warned = observer.first_status.get("warning")
            # Seen within one poll of the deadline at the latest: the agent warns well before it.
            if warned is None or warned[0] > deadline_mono + 2 * self.interval:
                seen = ", ".join(sorted(observer.first_status)) or "none"
                stage.finish(Verdict.FAILED, f"no warning seen before the deadline (statuses seen: {seen})")
                raise _StageError("warning", None, recorded=True)
            stage.finish(Verdict.PASSED, f"{TAG_AGENT_STATUS} = {warned[1]}, "
                         f"{deadline_mono - warned[0]:.0f}s before the deadline")

    def _judge_agent_ends(self, observer: Observer, deadline: datetime, deadline_mono: float) -> None:
        """The instance ends through the EC2 API (the agent's call), not before the deadline."""
        grace = END_GRACE.total_seconds()
        with self.stage("agent-ends") as stage:
            ended = observer.wait(self.clock, deadline_mono + grace, lambda: observer.ended)
            if not ended:
                stage.finish(Verdict.FAILED, f"still running {int(grace)}s after the deadline "
                             f"{format_timestamp(deadline)}" + observer.trouble())
                raise _StageError("agent-ends", None, recorded=True)
            described, seen_at = ended
            reason = (described.get("StateReason") or {}).get("Code", "")
            called = transition_time(str(described.get("StateTransitionReason") or ""))
            late = (called - deadline).total_seconds() if called else seen_at - deadline_mono
            if reason != API_SHUTDOWN:
                stage.finish(Verdict.FAILED, f"ended by {reason or 'an unknown cause'}, not by the EC2 API "
                             "(the OS failsafe or a power-off did it)")
                raise _StageError("agent-ends", None, recorded=True)
            if late < -1:
                stage.finish(Verdict.FAILED, f"ended {-late:.0f}s BEFORE the deadline")
                raise _StageError("agent-ends", None, recorded=True)
            stage.finish(Verdict.PASSED, f"{reason}, {'called' if called else 'seen'} {late:.0f}s after "
                         "the deadline" + ("" if called else f" (polled every {self.interval:g}s)"))

    def _judge_terminated(self, observer: Observer) -> None:
        """The instance reaches terminated within the grace period after it began ending."""
        grace = END_GRACE.total_seconds()
        with self.stage("terminated") as stage:
            gone = observer.wait(self.clock, time.monotonic() + grace, lambda: observer.terminated)
            if not gone:
                stage.finish(Verdict.FAILED, f"state {observer.state} {int(grace)}s after it began ending")
                raise _StageError("terminated", None, recorded=True)
            stage.finish(Verdict.PASSED, "terminated")

    def time_is_up(self) -> None:
        """The run's hard bound: interrupt the main thread, whose cleanup then ends everything."""
        import _thread

        self.timed_out = True
        _thread.interrupt_main()

    # -- cleanup ------------------------------------------------------------------------------
    def cleanup(self) -> dict[str, list[str]]:
        """Undo everything this run created (the role is kept with --keep-role); Ctrl-C is held
        off until it is done, because an interrupted cleanup is what leaves things billing."""
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            self.local.close()
            self.update("cleanup", "ending and removing everything this run created")
            removed, failed = self.ledger.rollback(keep=self._keep_kinds())
            return {"removed": removed, "failed": failed, "kept": list(self.ledger.kept)}
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)


class _StageError(Exception):
    def __init__(self, stage: str, cause: BaseException | None, *, recorded: bool = False) -> None:
        super().__init__(stage)
        self.stage = stage
        self.cause = cause
        self.recorded = recorded


class _StageTimer:
    """``with run.stage(name) as s: ... s.finish(verdict, detail)``; an exception inside fails it."""

    def __init__(self, report: Report, name: str, update: Callable[[str, str], None]) -> None:
        self.report = report
        self.name = name
        self.update = update
        self.started = time.monotonic()
        self.done = False

    def __enter__(self) -> _StageTimer:
        title = next(s.title for s in STAGES if s.name == self.name)
        self.update(self.name, f"checking: {title}")
        return self

    def finish(self, verdict: Verdict, detail: str) -> None:
        self.report.record(StageResult(self.name, verdict, detail, time.monotonic() - self.started))
        self.done = True
        self.update(self.name, f"{verdict.value}: {detail}")

    def __exit__(self, exc_type: Any, exc: BaseException | None, _tb: Any) -> None:
        if exc is None or self.done or isinstance(exc, KeyboardInterrupt):
            return
        if isinstance(exc, _StageError) and exc.recorded:
            return
        message = exc.message if isinstance(exc, SpawnError) else str(exc)
        self.finish(Verdict.FAILED, message)


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="spawn-selftest-") as tmp:
        yield Path(tmp)


def dry_run(opts: Options, args: argparse.Namespace, out: Output, budget: Budget) -> int:
    """What would be launched and checked; launch's own dry run shows the instance (reads only)."""
    with _workdir() as work:
        user_data = work / "proof.sh"
        user_data.write_bytes(proof.user_data("i-00000000000000000", opts.region or aws.default_region()))
        bundle = None
        if opts.local_agent:
            from controller.sandbox import local_bundle

            bundle = local_bundle.build(work / "bundle")
        launch_args = _parse_launch([*launch_argv(opts, user_data, bundle), "--dry-run"], args)
        captured = Relay(on_warning=out.warn, on_info=out.info)
        execute.run(launch_args, captured)
        launch_plan = captured.results[-1]
    plan: dict[str, Any] = {
        "dry_run": True, "budget": budget.to_dict(),
        "launch": ["spawn", *launch_argv(opts, Path("<proof user-data>"))],
        "peer": "one more instance of the same type, tagged spawn:managed=true, no agent and no role, "
                "ending itself after 10 minutes",
        "stages": [{"name": s.name, "title": s.title} for s in STAGES],
        "cleanup": "instances, security group, key pair and uploaded bundle created by this run; "
                   + ("the role is kept (--keep-role)" if opts.keep_role else "the role and profile too"),
        "launch_plan": launch_plan}

    def human(stream: Any) -> None:
        stream.write("DRY RUN: nothing was created.\n" + budget.text() + "\n")
        stream.write("would run: " + " ".join(plan["launch"]) + "\n")
        stream.write(f"and launch {plan['peer']}\n")
        stream.write("then check, in order:\n")
        for i, s in enumerate(STAGES, 1):
            stream.write(f"  {i}. {s.title}\n")
        stream.write(f"cleanup: {plan['cleanup']}\n")

    out.result(plan, human)
    return 0


def run(args: argparse.Namespace, out: Output) -> int:
    opts = options(args)
    budget = Budget(opts.instance_type, pricing.hourly_estimate(opts.instance_type))
    out.info(budget.text())
    if opts.dry_run:
        return dry_run(opts, args, out, budget)
    selftest = Run(opts, out, args)
    report = Report(run_id=selftest.run_id, region=opts.region or aws.default_region(),
                    local=opts.local_agent, budget=budget)
    selftest.report = report
    usage = False
    bound = threading.Timer(MAX_RUN.total_seconds(), selftest.time_is_up)
    bound.daemon = True
    try:
        with _workdir() as work:
            try:
                if threading.current_thread() is threading.main_thread():
                    bound.start()  # interrupts whatever the run waits for; the waits also stop at it
                selftest.execute(work)
            except _StageError as exc:
                if not exc.recorded:
                    cause = exc.cause
                    report.record(StageResult(exc.stage, Verdict.FAILED,
                                              cause.message if isinstance(cause, SpawnError) else str(cause)))
            except SpawnError as exc:
                usage = exc.exit_status is ExitStatus.USAGE
                if not any(r.verdict is Verdict.FAILED for r in report.results):
                    report.error = exc.message
            except KeyboardInterrupt:
                if selftest.timed_out:
                    report.error = (f"the run reached its bound of {int(MAX_RUN.total_seconds() // 60)} "
                                    "minutes; everything it created is being ended")
                else:
                    report.interrupted = True
                    out.warn("interrupted: cleaning up everything this run created")
            finally:
                bound.cancel()
                if selftest.clock.over() and report.error is None:  # every wait is bounded by it too
                    report.error = (f"the run reached its bound of {int(MAX_RUN.total_seconds() // 60)} "
                                    "minutes; everything it created is being ended")
                report.cleanup = selftest.cleanup()
    finally:
        report.complete()
    data = report.to_dict()
    out.result(data, lambda stream: render(data, stream))
    if report.interrupted:
        return int(ExitStatus.INTERRUPTED)
    if usage:  # bad input (an unknown template, a policy file with errors): nothing was created
        return int(ExitStatus.USAGE)
    return 0 if report.ok else int(SelftestFailed.exit_status)
