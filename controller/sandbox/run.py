"""`spawn sandbox`: start the local cloud, launch through `spawn launch`, run the real agent,
and follow the lifecycle until the instance is ended.

The story is told by ``Display`` (``--json``: one event per line). The sandbox plays two parts
and says which: it is AWS (the cloud, the metadata service, the spot reclaim after a notice) and
it is the workload (`spored complete`). Every decision and every EC2 call that ends the instance
is the agent's own, read from its log lines and confirmed by the cloud's state.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from controller.output import Output
from controller.sandbox import agent as sandbox_agent
from controller.sandbox import launcher, local_bundle
from controller.sandbox.cloud import LocalCloud, require_moto
from controller.sandbox.display import Display
from spored.contract import (
    TAG_EXPIRES_AT,
    TAG_IDLE_TIMEOUT,
    TAG_MANAGED,
    TAG_ON_COMPLETE,
    TAG_TTL,
    format_duration,
    format_remaining,
    parse_duration,
    parse_timestamp,
)
from spored.errors import ExitStatus, SpawnError, UsageError

POLL_SECONDS = 0.5
# AWS gives two minutes between a spot interruption notice and the reclaim; the sandbox, which
# plays AWS here, gives this much so the run stays short.
SPOT_NOTICE_LEAD = timedelta(seconds=10)
TIMEOUT_MARGIN = timedelta(seconds=60)
ENDED = ("terminated", "stopped")
# Agent log events shown to people (all of them are in --json as `agent` events).
_SHOWN_AGENT_EVENTS = {"tags.changed", "notice.seen", "completion.marker", "policy.problem",
                       "action.deferred", "action.cancelled", "action.failed", "action.done",
                       "config.invalid", "loop.failure", "tags.unknown", "identity.unknown"}


# What people see of the sandbox's configuration changes and of the agent's tags (--json has all).
_HUMAN_CHANGES = ("backstop", "wall", "warn_at")
_HUMAN_TAGS = (TAG_MANAGED, TAG_TTL, TAG_EXPIRES_AT, TAG_IDLE_TIMEOUT, TAG_ON_COMPLETE)


class SandboxError(SpawnError):
    code = "sandbox"
    exit_status = ExitStatus.UNEXPECTED


@dataclass(frozen=True)
class Options:
    ttl: timedelta | None
    idle_timeout: timedelta | None
    spot_after: timedelta | None
    complete_after: timedelta | None
    timeout: timedelta | None
    instance_type: str
    wall: bool
    keep: bool


def options(args: argparse.Namespace) -> Options:
    """Validate every flag before anything starts (exit 2 naming the flag)."""

    def duration(flag: str, value: str | None) -> timedelta | None:
        if value is None or value == "":
            return None
        return parse_duration(value, field=flag)

    ttl = duration("--ttl", args.ttl)
    idle = duration("--idle-timeout", args.idle_timeout)
    if ttl is None and idle is None:
        raise UsageError("--ttl: give --ttl or --idle-timeout, or the instance would never end")
    return Options(ttl=ttl, idle_timeout=idle,
                   spot_after=duration("--spot-interruption-after", args.spot_interruption_after),
                   complete_after=duration("--complete-after", args.complete_after),
                   timeout=duration("--timeout", args.timeout), instance_type=args.instance_type,
                   wall=bool(args.wall), keep=bool(args.keep))


@dataclass
class Lifecycle:
    """What the sandbox has seen so far."""

    instance_id: str
    state: str = "pending"
    started: float = field(default_factory=time.monotonic)
    agent_ready: bool = False
    ready_at: float | None = None
    plan: dict[str, Any] | None = None
    ended_by: str | None = None
    end_reason: str | None = None
    terminate_calls: list[dict[str, Any]] = field(default_factory=list)
    call_answered: bool = False
    last_countdown: int | None = None


def run_sandbox(args: argparse.Namespace, out: Output) -> int:
    opts = options(args)
    from controller import iam

    iam.request_from_args(args)  # IAM flags are refused here, before anything starts
    require_moto()
    with contextlib.ExitStack() as stack:
        display = stack.enter_context(Display(out))
        try:
            return _run(opts, args, display, stack)
        except SpawnError as exc:  # the stream ends with its outcome either way
            display.event("finished", f"failed: {exc.message}", mark="✗", outcome="failed",
                          error=exc.code, message=exc.message)
            raise
        except KeyboardInterrupt:
            display.event("finished", "interrupted: stopping the agent and the local cloud",
                          mark="!", outcome="interrupted")
            return 0 if opts.keep else int(ExitStatus.INTERRUPTED)


def _run(opts: Options, args: argparse.Namespace, display: Display,
         stack: contextlib.ExitStack) -> int:
    # moto builds millions of objects (AMIs, instance types) on the first EC2 calls, which all live
    # until the end; the cyclic garbage collector walking them again and again during that load
    # doubles its time. Off until launch has returned, then those objects are frozen out of its way.
    gc.disable()
    stack.callback(gc.enable)
    cloud = LocalCloud()
    cloud.start()
    stack.callback(cloud.stop)
    stack.enter_context(cloud.activate())
    display.event("sandbox-started", f"local cloud on {cloud.url} (moto server, region {cloud.region}); "
                  "fake credentials, nothing leaves this machine", endpoint=cloud.url, region=cloud.region)
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="spawn-sandbox-")))
    instance_id, region, stored = _launch(opts, args, display, work)
    gc.freeze()
    gc.enable()

    from controller.sandbox.imds_emulator import ImdsEmulator

    emulator = ImdsEmulator(instance_id, region, cloud.url).start()
    stack.callback(emulator.stop)
    role, expires = _role_credentials(emulator.url)
    display.event("imds-started", f"IMDSv2 emulator for {instance_id} on {emulator.url}: tokens "
                  f"required, tags in metadata, credentials of role {role} (sts:AssumeRole, expire "
                  f"{expires})", url=emulator.url, role=role, credentials_expire=expires)

    dirs = sandbox_agent.AgentDirs(work / "agent")
    env = cloud.agent_env(emulator.url)
    agent = _start_agent(opts, display, stored, dirs, env, imds_url=emulator.url, ec2_endpoint=cloud.url)
    stack.callback(agent.stop)
    if opts.keep:
        display.event("keep", "--keep: the local cloud stays up until Ctrl-C; act on it from another "
                      "terminal", instance_id=instance_id, environment=cloud.exports())
        _print_exports(display, cloud, instance_id)

    life = Lifecycle(instance_id=instance_id)
    end = _watch(opts, display, life, agent=agent, emulator=emulator, dirs=dirs, env=env, region=region)
    exit_code = agent.stop()
    if opts.keep:
        display.event("keep", f"instance {instance_id} is {life.state}; the local cloud stays up until "
                      "Ctrl-C", instance_id=instance_id, environment=cloud.exports())
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(1)
    display.event("finished", f"instance {instance_id} is {life.state}: {end}",
                  outcome=life.state, ended_by=life.ended_by, reason=life.end_reason,
                  seconds_since_agent_start=round(time.monotonic() - life.started, 1),
                  agent_exit_code=exit_code, terminate_calls=life.terminate_calls)
    return 0


def _launch(opts: Options, args: argparse.Namespace, display: Display,
            work: Path) -> tuple[str, str, launcher.StoredLaunch]:
    """`spawn launch` for the sandbox instance; then what it stored, read back and checked."""
    bundle_path = local_bundle.build(work / "bundle")
    spot = opts.spot_after is not None

    def on_step(step: str, message: str) -> None:
        if message.startswith("done"):
            display.event("launch-step", f"launch: {step}: {message}", step=step, message=message)

    def on_warning(message: str) -> None:
        display.event("launch-step", f"launch: {message}", mark="!", step="warning", message=message)

    argv = launcher.launch_argv(instance_type=opts.instance_type, ttl=opts.ttl,
                                idle_timeout=opts.idle_timeout, spot=spot,
                                agent_bundle=str(bundle_path))
    display.text(f"  running: spawn {' '.join(argv)}")
    result = launcher.run_launch(argv, args, on_step, on_warning)
    instance = result["instances"][0]
    instance_id = str(instance["instance_id"])
    region = str(result["region"])
    display.event("instance-launched",
                  f"instance {instance_id} ({result['instance_type']}, {instance['state']}) launched by "
                  f"the same code as `spawn launch`; deadline {result.get('deadline') or 'none'}",
                  instance_id=instance_id, instance_type=result["instance_type"],
                  state=instance["state"], deadline=result.get("deadline"),
                  idle_timeout=result.get("idle_timeout"), on_complete=result.get("on_complete"),
                  spot=spot)

    stored = launcher.stored_launch(instance_id, region)
    display.event("role-provisioned",
                  f"role {stored.role_name} with inline policies "
                  f"{', '.join(stored.inline_policies) or 'none'}"
                  + (f" and managed {', '.join(stored.managed_policies)}" if stored.managed_policies else ""),
                  role_name=stored.role_name, inline_policies=stored.inline_policies,
                  managed_policies=stored.managed_policies)
    if args.iam_policy or args.iam_policy_file or args.iam_managed_policies:
        display.text(json.dumps({"role_name": stored.role_name, "inline_policies": stored.inline_policies,
                                 "managed_policies": stored.managed_policies}, indent=2))
    served = launcher.fetch_sha256(stored.bundle_url)
    if served != stored.bundle_sha256:
        raise SandboxError(f"the bundle URL in the user-data serves sha256 {served}, but the user-data "
                           f"expects {stored.bundle_sha256}")
    display.event("user-data-stored",
                  f"user-data stored with the instance ({stored.user_data_bytes} bytes: "
                  f"{', '.join(n for n in stored.part_names if n)}); its bundle URL serves the expected "
                  f"sha256 {stored.bundle_sha256[:12]}…; NOT executed here: the agent runs as a local "
                  "process instead", bytes=stored.user_data_bytes, parts=stored.part_names,
                  bundle_sha256=stored.bundle_sha256, bundle_verified=True, executed=False)
    return instance_id, region, stored


def _start_agent(opts: Options, display: Display, stored: launcher.StoredLaunch,
                 dirs: sandbox_agent.AgentDirs, env: dict[str, str], *, imds_url: str,
                 ec2_endpoint: str) -> sandbox_agent.AgentProcess:
    """`spored run` with launch's configuration and the sandbox's changes."""
    dirs.create()
    cfg = sandbox_agent.sandbox_config(stored.config_toml, dirs, imds_url=imds_url,
                                       ec2_endpoint=ec2_endpoint, wall=opts.wall)
    sandbox_agent.write_config(cfg, dirs)
    changed = sandbox_agent.changes(stored.config_toml, cfg)
    agent = sandbox_agent.AgentProcess(dirs, env)
    pid = agent.start()
    shown = ", ".join(f"{k} {changed[k][0]} -> {changed[k][1]}" for k in _HUMAN_CHANGES if k in changed)
    display.event("agent-started",
                  f"spored run (pid {pid}) as you, no static credentials; the config from the user-data "
                  f"with {shown}, shorter intervals, local endpoints and marker",
                  pid=pid, config=str(dirs.config), config_changes={k: list(v) for k, v in changed.items()})
    return agent


def _role_credentials(imds_url: str) -> tuple[str, str]:
    """Ask the emulator for the role credentials once, as an instance would (IMDSv2): checks it
    serves them, and has them ready before the agent's first request."""
    import requests

    token = requests.put(f"{imds_url}/latest/api/token", timeout=10,
                         headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})
    token.raise_for_status()
    headers = {"X-aws-ec2-metadata-token": token.text}
    base = f"{imds_url}/latest/meta-data/iam/security-credentials/"
    listing = requests.get(base, headers=headers, timeout=10)
    listing.raise_for_status()
    role = listing.text.strip().splitlines()[0]
    creds = requests.get(base + role, headers=headers, timeout=30)
    creds.raise_for_status()
    return role, str(creds.json()["Expiration"])


def _print_exports(display: Display, cloud: LocalCloud, instance_id: str) -> None:
    region = f"--region {cloud.region}"
    lines = ["  In another terminal, act on this local cloud with spawn (the agent reacts as on EC2):"]
    lines += [f"    export {k}={v}" for k, v in cloud.exports().items()]
    lines += [f"    spawn list {region}", f"    spawn status {instance_id} {region}",
              f"    spawn extend {instance_id} +5m {region}",
              f"    spawn terminate {instance_id} --yes {region}"]
    display.text("\n".join(lines))


def _instance_state(instance_id: str, region: str) -> str:
    from controller import aws

    ec2 = aws.client("ec2", region)
    found = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return str(found["State"]["Name"])


def _watch(opts: Options, display: Display, life: Lifecycle, *, agent: sandbox_agent.AgentProcess,
           emulator: Any, dirs: sandbox_agent.AgentDirs, env: dict[str, str], region: str) -> str:
    """Follow the agent and the cloud until the instance has ended; returns how it ended.

    Each turn: relay the agent's events, poll the cloud (returns once the instance ended), play
    the scripted events, stop if the agent died or the time limit passed, redraw the countdown.
    --spot-interruption-after and --complete-after count from the moment the agent is ready.
    """
    started = time.monotonic()
    limit = _time_limit(opts)
    script = _Script()
    next_poll = 0.0
    while True:
        for record in _drain(agent):
            _on_agent(record, display, life)
        now = time.monotonic()
        if now >= next_poll:
            next_poll = now + POLL_SECONDS
            if _poll_cloud(agent, display, life, region):
                return _ending(life)
        _play_script(opts, script, life, now, emulator=emulator, dirs=dirs, env=env, display=display,
                     region=region)
        _fail_if_agent_exited(agent, display, life)
        if limit is not None and now - started > limit:
            raise SandboxError(f"the instance {life.instance_id} is still {life.state} after "
                               f"{int(limit)}s; the agent did not end it",
                               hint="run with --json to see every agent event; an idle timeout only "
                                    "fires while this machine is idle")
        _countdown(display, life, _idle_summary(dirs) if opts.idle_timeout is not None else "")
        time.sleep(0.1)


def _time_limit(opts: Options) -> float | None:
    """Seconds the watch may last: --timeout, else the earliest scripted end plus a margin;
    None with --keep (the instance is meant to outlive the watch)."""
    if opts.keep:
        return None
    ends = [d for d in (opts.ttl, opts.idle_timeout, opts.complete_after) if d is not None]
    if opts.spot_after is not None:
        ends.append(opts.spot_after + SPOT_NOTICE_LEAD)
    return (opts.timeout or min(ends) + TIMEOUT_MARGIN).total_seconds()


def _poll_cloud(agent: sandbox_agent.AgentProcess, display: Display, life: Lifecycle, region: str) -> bool:
    """Read the instance's state from the local cloud and report a change; True once it ended."""
    state = _instance_state(life.instance_id, region)
    if state in ENDED:  # first what the agent logged around its call, then the state
        _settle(agent, display, life)
    if state != life.state:
        life.state = state
        display.event("instance-state", f"instance {life.instance_id} is {state} (local cloud)",
                      mark="■" if state in ENDED else "·", instance_id=life.instance_id, state=state)
    return state in ENDED


@dataclass
class _Script:
    """What the sandbox has played so far of the events it scripts after the agent is ready."""

    spot_armed: bool = False
    completion_sent: bool = False
    reclaim_at: datetime | None = None


def _play_script(opts: Options, script: _Script, life: Lifecycle, now: float, *, emulator: Any,
                 dirs: sandbox_agent.AgentDirs, env: dict[str, str], display: Display, region: str) -> None:
    """Each scripted event once, when due: the spot notice (--spot-interruption-after), the
    reclaim at the notice's time unless something ended the instance first, and the workload's
    completion (--complete-after)."""
    since_ready = timedelta(seconds=now - life.ready_at) if life.ready_at is not None else None
    if since_ready is not None and opts.spot_after is not None and not script.spot_armed \
            and since_ready >= opts.spot_after:
        reclaim_at = datetime.now(UTC).replace(microsecond=0) + SPOT_NOTICE_LEAD
        script.reclaim_at = reclaim_at
        emulator.arm_spot("terminate", at=reclaim_at)
        script.spot_armed = True
        display.event("spot-notice-armed",
                      f"the metadata service now serves a spot interruption notice: terminate at "
                      f"{reclaim_at:%H:%M:%S}Z (AWS gives 2 minutes; the sandbox gives "
                      f"{format_duration(SPOT_NOTICE_LEAD)})", mark="!", at=reclaim_at.isoformat())
    if script.reclaim_at is not None and datetime.now(UTC) >= script.reclaim_at and life.ended_by is None:
        _reclaim(life, region, display)
    if since_ready is not None and opts.complete_after is not None and not script.completion_sent \
            and since_ready >= opts.complete_after:
        script.completion_sent = True
        _complete(dirs, env, display)


def _fail_if_agent_exited(agent: sandbox_agent.AgentProcess, display: Display, life: Lifecycle) -> None:
    """The agent must outlive the instance: relay its last events, then fail with its stderr."""
    code = agent.exit_code()
    if code is not None:
        for record in _drain(agent):
            _on_agent(record, display, life)
        tail = "\n".join(agent.stderr_tail)
        raise SandboxError(f"the agent exited with code {code} before the instance ended"
                           + (f":\n{tail}" if tail else ""))


def _idle_summary(dirs: sandbox_agent.AgentDirs) -> str:
    """The agent's idle verdict per signal, from the status file it writes every tick."""
    try:
        status = json.loads((dirs.runtime / "status.json").read_text(encoding="utf-8"))
        signals = status["idle"]["signals"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    active = [f"{s['name']} {s['value']} >= {s['threshold']}" if s.get("value") is not None
              else f"{s['name']} unknown" for s in signals if not s.get("idle")]
    if not signals:
        return ""
    return "; idle: yes" if not active else f"; not idle ({', '.join(active)})"


def _complete(dirs: sandbox_agent.AgentDirs, env: dict[str, str], display: Display) -> None:
    """The sandbox, playing the workload, says it is done."""
    done = sandbox_agent.signal_completion(dirs, env)
    if done.returncode != 0:
        raise SandboxError(f"spored complete failed (exit {done.returncode}): "
                           f"{done.stderr.strip() or done.stdout.strip()}")
    display.event("completion-signalled", f"the workload ran `spored complete`: {done.stdout.strip()}",
                  marker=str(dirs.marker))


def _settle(agent: sandbox_agent.AgentProcess, display: Display, life: Lifecycle) -> None:
    """The cloud says the instance ended: read what the agent logged around that call
    (its log line may still be on its way)."""
    until = time.monotonic() + 3.0
    while time.monotonic() < until:
        for record in _drain(agent):
            _on_agent(record, display, life)
        if life.ended_by is not None and (life.ended_by != "agent" or life.call_answered):
            return
        time.sleep(0.1)


def _drain(agent: sandbox_agent.AgentProcess) -> Iterator[dict[str, Any]]:
    while True:
        try:
            yield agent.lines.get_nowait()
        except Exception:
            return


def _on_agent(record: dict[str, Any], display: Display, life: Lifecycle) -> None:
    name = str(record.get("event", ""))
    # The agent's own fields, renamed where they would collide with the sandbox event's.
    fields = {(f"agent_{k}" if k in ("t", "mark", "agent_event") else k): v
              for k, v in record.items() if k != "event"}
    if display.out.json:
        display.event("agent", name, agent_event=name, **fields)
    elif name in _SHOWN_AGENT_EVENTS:
        if name == "tags.changed" and isinstance(fields.get("lifecycle"), dict):
            detail = f"from {fields.get('source')}: " + " ".join(
                f"{k}={v}" for k, v in fields["lifecycle"].items() if k in _HUMAN_TAGS)
        else:
            detail = " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("level", "timestamp"))
        display.event("agent", f"agent: {name} {detail}", mark="·", agent_event=name)
    if name == "decision":
        if fields.get("verb") in ("wait", "act", "notice"):
            life.plan = fields
        if not life.agent_ready:
            life.agent_ready, life.ready_at = True, time.monotonic()
            display.event("agent-ready", f"agent ready: {fields.get('explanation')}",
                          verb=fields.get("verb"), action=fields.get("action"),
                          reason=fields.get("reason"), at=fields.get("at"))
    elif name in ("warning", "notice"):
        text = fields.get("message") or (f"{fields.get('reason')} notice: AWS reclaims the instance at "
                                          f"{fields.get('at')}")
        display.event("warning", f"agent warns: {text}",
                      mark="!", action=fields.get("action"), reason=fields.get("reason"),
                      at=fields.get("at"), message=fields.get("message"), source=name)
    elif name in ("action.done", "action.failed"):
        life.call_answered = True
    elif name == "action.start":
        call = {"action": fields.get("action"), "reason": fields.get("reason"),
                "instance_id": fields.get("instance_id")}
        life.terminate_calls.append(call)
        life.ended_by, life.end_reason = "agent", str(fields.get("reason"))
        display.event("terminate-call", f"agent calls EC2 to {call['action']} {call['instance_id']} "
                      f"(reason {call['reason']})", mark="→", **call)


def _reclaim(life: Lifecycle, region: str, display: Display) -> None:
    """The sandbox, playing AWS, reclaims the spot instance at the notice's time."""
    from controller import aws

    aws.client("ec2", region).terminate_instances(InstanceIds=[life.instance_id])
    life.ended_by, life.end_reason = "cloud (spot reclaim)", "spot-interruption"
    display.event("terminate-call", f"the local cloud reclaims spot instance {life.instance_id}, as AWS "
                  "does at the notice's time", mark="→", action="terminate", reason="spot-interruption",
                  instance_id=life.instance_id, by="cloud")


def _countdown(display: Display, life: Lifecycle, idle: str = "") -> None:
    plan = life.plan
    if not plan or not plan.get("at"):
        display.status(f"instance {life.instance_id}: {life.state}; agent "
                       f"{'ready' if life.agent_ready else 'starting'}{idle}")
        return
    at = parse_timestamp(str(plan["at"]))
    left = at - datetime.now(UTC)
    seconds = max(0, int(left.total_seconds() + 0.999))
    text = (f"instance {life.instance_id}: {life.state}; agent plans {plan.get('action')} "
            f"({plan.get('reason')}) at {at:%H:%M:%S}Z, in {format_remaining(timedelta(seconds=seconds))}")
    display.status(text + idle)
    if seconds != life.last_countdown:
        life.last_countdown = seconds
        if display.out.json:
            display.event("countdown", text, seconds_left=seconds, action=plan.get("action"),
                          reason=plan.get("reason"), at=plan.get("at"))


def _ending(life: Lifecycle) -> str:
    if life.ended_by is None:
        life.ended_by = "someone else"
        return "ended by someone other than the agent (e.g. `spawn terminate`)"
    return f"ended by the {life.ended_by}, reason {life.end_reason}"
