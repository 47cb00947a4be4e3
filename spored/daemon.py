"""The agent loop: observe -> decide -> record -> act -> notify the watchdog.

Everything that changes state happens on the main thread, which consumes events from one queue
(spored.events). The parts, each in its own module:

- ``TagSource`` (spored.tag_source): the identity and the ``spawn:`` tags, from instance metadata
  or DescribeTags with back-off;
- ``NoticeWatch`` (spored.notices): spot interruption and rebalance notices, on spot only;
- ``Timers`` (spored.timers): the events on time - ``tick``, ``tags``, ``due``/``prepare`` at the
  exact time of the next action, the notice poll and the clock watch;
- ``CompletionCheck`` (spored.completion): the workload's completion marker;
- ``Announcer`` (spored.announce): warnings, notices and the pre-stop hook;
- ``StatusPublisher`` (spored.status_publisher): the ``spawn:agent-status`` tag, from a child;
- ``SafetyLayers`` (spored.safety_layers): the permission proof and the OS failsafe's re-arm.

This module holds the loop, the decision and the action (the EC2 call, deferral, the power-off
fallback), and the status file. SIGHUP re-reads the configuration and the tags at once; SIGTERM
sends STOPPING=1 and exits 0.

Exit codes: 0 after SIGTERM; 75 (EX_TEMPFAIL) after ``MAX_SAME_FAILURES`` identical consecutive
failures of the loop, so systemd restarts the agent; 78 (EX_CONFIG) for a configuration error at
start, which the unit lists in RestartPreventExitStatus.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from spored import __version__, actions, failsafe, logs
from spored import config as config_mod
from spored.agent_status import derive
from spored.announce import Announcer
from spored.clock import Change, Clock, reference_from_date
from spored.completion import CompletionCheck
from spored.config import Config
from spored.contract import Action, format_timestamp, is_managed
from spored.decide import Decision, Observations, Verb, decide, summary
from spored.ec2 import Ec2CallError
from spored.errors import ConfigError
from spored.events import EventQueue, SignalRelay
from spored.exit_codes import AgentExit
from spored.imds_client import ImdsClient
from spored.imds_errors import ImdsError
from spored.notices import NoticeWatch
from spored.observe import Unknown
from spored.probes import (
    Counters,
    NvidiaSmi,
    Signals,
    read_boot_id,
    read_counters,
    read_gpu,
    read_sessions,
    read_uptime,
    signals_between,
)
from spored.safety_layers import SafetyLayers
from spored.sdnotify import Notifier
from spored.state import ActFailure, AgentState, StateStore, runtime_dir, state_dir, write_atomic
from spored.status_publisher import StatusPublisher
from spored.tag_source import TagSource
from spored.timers import Timers

EXIT_RESTART = AgentExit.TEMPFAIL
EXIT_CONFIG = AgentExit.CONFIG
MAX_SAME_FAILURES = 5
STATUS_FILE = "status.json"
# Build the EC2 client (boto3, credentials) this long before a planned action, not at it.
WARM_BEFORE = timedelta(seconds=90)
# A failed action is retried this often.
ACT_RETRY = timedelta(seconds=20)
# An action deferred because its fresh metadata read failed (a hiccup) is tried again this soon,
# not at the next tick.
DEFER_RETRY = timedelta(seconds=2)

log = logs.get("spored.daemon")


class Agent:
    def __init__(self, cfg: Config, config_path: Path, *, proc_root: Path = Path("/"),
                 notifier: Notifier | None = None, read_only: bool = False) -> None:
        self.config = cfg
        # read_only (``spored check``): observe and decide; never save, consume or act.
        self.read_only = read_only
        self.config_path = config_path
        self.proc_root = proc_root
        self.notifier = notifier or Notifier()
        self.runtime = runtime_dir()
        self.imds = ImdsClient(cfg.imds_endpoint)
        self.clock = Clock()
        self.store = StateStore(state_dir(), read_boot_id(proc_root))
        self.state: AgentState = self.store.load(set_aside=not read_only)
        self.source = TagSource(self.imds, cfg)
        self.notices = NoticeWatch(self.state.notices)
        nothing = Unknown("no window yet")
        self.signals = Signals(nothing, nothing, nothing, nothing, None)
        self.uptime: float | Unknown = Unknown("not read yet")
        self._counters: Counters | None = None
        self._nvidia_smi = NvidiaSmi()
        self.decision: Decision | None = None
        self.last_error: str | None = self.store.problem
        self._events = EventQueue()
        self._timers = Timers(self._events, poll_notices=self.poll_notices, check_clock=self.check_clock)
        self._completion = CompletionCheck(proc_root)
        self._announcer = Announcer(self.runtime)
        self._publisher = StatusPublisher()
        self._safety = SafetyLayers(self.runtime)
        self._failures: tuple[str, int] = ("", 0)
        self._save_error: str | None = None
        self._warmed = False
        self._last_attempt = -1e9

    # ---------------------------------------------------------------- observation
    def now(self) -> datetime:
        """The agent's time: the wall clock, held to the monotonic clock while a step of the wall
        clock is not confirmed by a second source (spored.clock)."""
        return self.clock.now()

    def check_clock(self) -> None:
        """Clock-watch thread (it runs on the monotonic clock, so a step cannot stall it): compare
        the wall clock with the agent's time; on any change, the loop re-plans its timers."""
        changes = [self.clock.check()]
        if self.clock.pending is not None:
            # A response from now, for its Date (an older one may predate the step).
            with contextlib.suppress(ImdsError):
                self.imds.get("meta-data/instance-id")
            reference = reference_from_date(self.imds.last_date, self.imds.last_date_at,
                                            "instance metadata Date header")
            changes.append(self.clock.check(reference))
        found = [c for c in changes if c is not None]
        for change in found:
            _log_clock(change, self.clock)
        if found:
            self._events.put("clock")

    def refresh_identity(self) -> None:
        self.source.refresh_identity()

    def refresh_life_cycle(self) -> None:
        """Read the purchasing option until it is known, and run the notice poll only on spot."""
        self.notices.read_life_cycle(self.imds)
        self._timers.set_notice_poll(self._poll_interval())

    def refresh_tags(self) -> None:
        problem = self.source.refresh(self.now())
        if problem is not None:
            self.last_error = problem
        else:
            self._timers.set_tag_interval(self.source.refresh_interval())

    def poll_notices(self) -> None:
        """Notice-poll thread: read spot/rebalance; wake the loop on a notice it has not seen."""
        if self.notices.poll(self.imds):
            self._events.put("notice")

    def sample(self) -> None:
        monotonic = time.monotonic()
        counters = read_counters(self.proc_root, monotonic)
        nvidia_smi = self._nvidia_smi.path(monotonic)
        self.signals = signals_between(self._counters, counters, sessions=read_sessions(self.proc_root),
                                       gpu=read_gpu(nvidia_smi) if nvidia_smi else None)
        self._counters = counters
        self.uptime = read_uptime(self.proc_root)
        if not self.read_only:
            completed_at, problem = self._completion.check(
                Path(self.config.completion_marker), self.state.completed_at, self.now(),
                self.config.completion_delay)
            if completed_at != self.state.completed_at:
                self.state = replace(self.state, completed_at=completed_at)
            if problem is not None:
                self.last_error = problem

    def observations(self) -> Observations:
        spot, rebalance = self.notices.readings()
        return Observations(identity=self.source.identity, tags=self.source.tags, spot=spot,
                            rebalance=rebalance, signals=self.signals, uptime=self.uptime)

    def _poll_interval(self) -> float | None:
        return self.config.spot_poll.total_seconds() if self.notices.wanted else None

    def _save_state(self) -> bool:
        """Save the state; a failure is reported and retried on the next evaluation, never raised
        into the loop (the tick still reaches its watchdog ping). The completion marker is consumed
        only after a successful save."""
        try:
            self.store.save(self.state)
        except OSError as exc:
            why = f"state not saved: {self.store.path}: {exc.strerror or exc}"
            if self._save_error != why:
                log.error("state.save_failed", path=str(self.store.path), error=exc.strerror or str(exc),
                          kept="in memory; the completion marker stays until the state is saved")
            self._save_error = why
            self.last_error = why
            return False
        if self._save_error is not None:
            log.info("state.saved", path=str(self.store.path), after=self._save_error)
            self._save_error = None
        self._completion.consume()
        return True

    # ---------------------------------------------------------------- decision and action
    def decide_only(self) -> Decision:
        self.decision = decide(self.state, self.observations(), self.now(), self.config)
        return self.decision

    def evaluate(self, trigger: str) -> Decision:
        decision = decide(self.state, self.observations(), self.now(), self.config)
        if decision.policy.source == "tags" and decision.policy.valid_tags != self.state.last_good_tags:
            self.state = replace(self.state, last_good_tags=dict(decision.policy.valid_tags))
        self.state = replace(self.state, idle_since=decision.idle_since)
        self._log_decision(decision, trigger)
        self.decision = decision
        self._announcer.withdraw_if_moved(decision, self.state)
        if decision.verb is Verb.ACT:
            failure = self.state.failure
            if (failure is not None and failure.key == decision.key and failure.kind != "metadata"
                    and time.monotonic() - self._last_attempt < ACT_RETRY.total_seconds()):
                pass  # the EC2 call failed a moment ago: retry after ACT_RETRY, not on every event
                # (unreadable metadata is retried on every event: it is a local read, not an API call)
            else:
                self._last_attempt = time.monotonic()
                self._act(decision)
        elif decision.verb is Verb.NOTICE:
            self.state = self._announcer.notice(decision, self.state, self.config)
        elif decision.verb is Verb.BACKSTOP:
            self._backstop(decision)
        elif decision.verb is Verb.WAIT:
            self._prepare(decision)
        final = self.decision  # _act may have replaced it (tags changed right before acting)
        self._timers.schedule_due(final.at if final.verb is Verb.WAIT else None, self.now())
        self._save_state()
        self.write_status()
        if not self.read_only:
            self.publish_status(final)
            if self._safety.keep(final, self.source.identity, self.now(), self.config,
                                 child_busy=self._publisher.busy):
                self.write_status()
        return final

    def _log_decision(self, decision: Decision, trigger: str) -> None:
        """A new problem, and a decision that differs from the last one, are logged once."""
        for problem in decision.problems:
            if self.decision is None or problem not in self.decision.problems:
                log.warning("policy.problem", problem=problem)
        if self.decision is None or (decision.verb, decision.key) != (self.decision.verb, self.decision.key):
            log.info("decision", trigger=trigger, verb=str(decision.verb),
                     action=str(decision.action) if decision.action else None,
                     reason=str(decision.reason) if decision.reason else None,
                     at=format_timestamp(decision.at) if decision.at else None,
                     explanation=decision.explanation)

    def _prepare(self, decision: Decision) -> None:
        if decision.at is None or decision.key is None or decision.reason is None:
            return
        self.state = self._announcer.prepare(decision, self.state, self.config)
        if decision.at - self.now() > WARM_BEFORE or self._warmed:
            return
        ec2 = self.source.ec2()
        if ec2 is not None and not self.config.dry_run:
            self._warmed = True
            threading.Thread(target=ec2.warm, name="ec2-warm", daemon=True).start()

    def _record_failure(self, key: str, kind: str, message: str) -> None:
        failure = self.state.failure
        since = failure.since if failure is not None and failure.key == key and failure.kind == kind \
            else self.now()
        self.state = replace(self.state, failure=ActFailure(key=key, kind=kind, since=since,
                                                            message=message))
        self.last_error = message

    def _metadata_lost(self, decision: Decision, why: str) -> None:
        if decision.key is None:
            return
        failure = self.state.failure
        first = failure is None or failure.key != decision.key or failure.kind != "metadata"
        self._record_failure(decision.key, "metadata", f"instance metadata unreadable: {why}")
        if first:
            grace = self.config.backstop_after
            plan = (f"OS power-off at {format_timestamp(self.now() + grace)} (after {grace})"
                    if self.config.backstop else "no power-off fallback: backstop is off")
            log.error("metadata.lost", action=str(decision.action), reason=str(decision.reason),
                      deadline=_ts(decision.at), why=why, fallback=plan)

    def _act(self, decision: Decision) -> None:
        if decision.action is None or decision.key is None:
            return
        # Right before a destructive call: the tags read now (one metadata read; no earlier read is
        # reused, so an extension or an unmanage a moment before the deadline is honoured) and the
        # same decision from them.
        if isinstance(self.source.identity, Unknown):
            self.refresh_identity()
        identity = self.source.identity
        tags, source, error = self.source.read()
        if isinstance(tags, Unknown) or isinstance(identity, Unknown):
            why = str(tags) if isinstance(tags, Unknown) else str(identity)
            log.warning("action.deferred", action=str(decision.action), why=why)
            self.last_error = f"{decision.action} deferred: {why}"
            if error is not None:  # the EC2 API refuses or is unreachable: counts toward the backstop
                self._record_failure(decision.key, error.kind, str(error))
            else:
                if isinstance(tags, Unknown) and not isinstance(identity, Unknown):
                    # Metadata unreadable (e.g. disabled: 403) while a deadline known from the last
                    # good tags is due: nothing can confirm or carry out the call, so it counts
                    # toward the power-off fallback after the grace period (backstop_after).
                    self._metadata_lost(decision, why)
                self._timers.defer(DEFER_RETRY.total_seconds())
            return
        self.source.accept(tags, source, self.now())
        fresh = decide(self.state, self.observations(), self.now(), self.config)
        if fresh.verb is not Verb.ACT or fresh.key != decision.key or not is_managed(tags):
            log.info("action.cancelled", action=str(decision.action), why=fresh.explanation)
            self.decision = fresh
            return
        target = identity.instance_id
        stamp = format_timestamp(self.now())
        if self.config.dry_run:
            log.warning("action.dry_run", action=str(decision.action), reason=str(decision.reason),
                        instance_id=target)
            self.state = replace(self.state, done={**self.state.done, decision.key: f"{stamp} (dry run)"})
            return
        ec2 = self.source.ec2()
        if ec2 is None:
            return
        log.warning("action.start", action=str(decision.action), reason=str(decision.reason),
                    instance_id=target, deadline=_ts(decision.at))
        try:
            done = actions.execute(ec2, target, decision.action,
                                   hibernate_fallback=self.config.hibernate_fallback)
        except Ec2CallError as exc:
            self._record_failure(decision.key, exc.kind, str(exc))
            log.error("action.failed", action=str(decision.action), code=exc.code, kind=exc.kind)
            return
        self.state = replace(self.state, done={**self.state.done, decision.key: stamp}, failure=None)
        log.warning("action.done", action=str(done), reason=str(decision.reason), instance_id=target)

    def _backstop(self, decision: Decision) -> None:
        if decision.key is None or not self.config.backstop:
            return
        path = actions.request_poweroff(self.runtime, reason=decision.explanation)
        behaviour = failsafe.shutdown_behaviour(decision.action) if decision.action else "terminate"
        log.error("backstop.poweroff_requested", path=str(path), why=decision.explanation,
                  action=str(decision.action), shutdown_behaviour=behaviour)
        if decision.action is Action.HIBERNATE:
            log.error("backstop.hibernate_state_lost",
                      why="an OS power-off stops the instance without hibernating: RAM state is lost")
        actions.console(f"spored: power-off requested: {decision.action} failed; "
                        f"shutdown behaviour {behaviour}")
        self.state = replace(self.state, done={**self.state.done,
                                               f"backstop@{decision.key}": format_timestamp(self.now())})

    # ---------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        d = self.decision
        now = self.now()
        policy = d.policy if d else None
        identity = self.source.identity
        completed_at = self.state.completed_at
        return {
            "version": __version__,
            "pid": os.getpid(),
            "updated_at": format_timestamp(now),
            "tick_seconds": self.config.tick.total_seconds(),
            "instance_id": None if isinstance(identity, Unknown) else identity.instance_id,
            "life_cycle": str(self.notices.life_cycle),
            "notice_poll": self._timers.polling,
            "managed": policy.managed if policy else None,
            "deadline": format_timestamp(policy.deadline) if policy and policy.deadline else None,
            "deadline_source": policy.deadline_source if policy else None,
            "idle": {
                "timeout": str(policy.idle_timeout) if policy and policy.idle_timeout else None,
                "since": format_timestamp(d.idle_since) if d and d.idle_since else None,
                "signals": [s.__dict__ for s in d.idle] if d else [],
            },
            "clock": {"step_pending_seconds": _round(self.clock.pending),
                      "refuted_step_seconds": _round(self.clock.refuted)},
            "state": {"path": str(self.store.path), "saved": self._save_error is None,
                      "error": self._save_error},
            "completion": {
                "completed_at": _ts(completed_at),
                # True while a completion is held in memory only (the state could not be saved).
                "marker_pending": self._completion.pending is not None,
                "action_at": _ts(completed_at + self.config.completion_delay if completed_at else None),
            },
            "tags": {"source": self.source.source, "last_refresh": _ts(self.source.last_refresh)},
            "last_error": self.last_error,
            "permissions": self._safety.permissions.result,
            "failsafe_at": _ts(self._safety.failsafe.requested),
            "problems": list(d.problems) if d else [],
            "next": None if d is None else {
                "verb": str(d.verb), "action": str(d.action) if d.action else None,
                "reason": str(d.reason) if d.reason else None,
                "at": format_timestamp(d.at) if d.at else None, "why": d.explanation,
            },
            "done": self.state.done,
            # The last failed attempt at the due action (kind: denied | unreachable | error |
            # metadata), which the power-off fallback counts from.
            "failure": None if self.state.failure is None else {
                "key": self.state.failure.key, "kind": self.state.failure.kind,
                "since": format_timestamp(self.state.failure.since),
                "message": self.state.failure.message},
            "dry_run": self.config.dry_run,
            # boto3 is loaded only when an EC2 call was needed (never with tags in metadata).
            "boto3_loaded": "boto3" in sys.modules,
        }

    def publish_status(self, decision: Decision) -> None:
        """spawn:agent-status on our own instance when the state changed; never waits for the write."""
        failure = self.state.failure
        denied = self._safety.permissions.denied
        status = derive(decision, self.observations(), warned=self._announcer.warning_key is not None,
                        failing=(failure is not None and failure.key == decision.key) or bool(denied))
        self._publisher.publish(status, self.now(),
                                detail=(self._safety.permissions.summary() or "") if denied else "",
                                identity=self.source.identity, managed=decision.policy.managed,
                                dry_run=self.config.dry_run, endpoint=self.config.ec2_endpoint)

    def write_status(self) -> None:
        try:
            # Compact: the C encoder (an indent selects the pure-Python one, most of an idle tick's
            # cost). `spored status --json` prints it indented.
            write_atomic(self.runtime / STATUS_FILE, json.dumps(self.status(), separators=(",", ":")) + "\n",
                         mode=0o644, durable=False)
        except OSError as exc:
            log.error("status.write_failed", error=exc.strerror)

    # ---------------------------------------------------------------- loop
    def _start_timers(self, *, restart: bool = False) -> None:
        start = self._timers.restart if restart else self._timers.start
        start(tick=self.config.tick.total_seconds(), tags=self.source.refresh_interval(),
              # The wall clock is compared with the agent's time (spored.clock) once a tick, on
              # the clock watch's own monotonic wait (a step cannot stall it). In between, the
              # agent's time runs on the monotonic clock: a step changes nothing until it is seen.
              # (Every 2 s, the check was a quarter of an idle agent's cost.)
              clock_check=self.config.tick.total_seconds(),
              notice_poll=self._poll_interval())

    def reload(self) -> None:
        try:
            cfg = config_mod.load(self.config_path)
        except ConfigError as exc:
            log.error("config.reload_failed", error=exc.message, kept="previous configuration")
            self.last_error = exc.message
            return
        changed = cfg != self.config
        self.config = self.source.config = cfg
        if cfg.imds_endpoint != self.imds.base and cfg.imds_endpoint:
            self.imds = self.source.imds = ImdsClient(cfg.imds_endpoint)
        log.info("config.reloaded", changed=changed)
        self.refresh_identity()
        self.refresh_tags()
        if changed:
            self._start_timers(restart=True)

    def tick(self) -> None:
        if isinstance(self.source.identity, Unknown):
            self.refresh_identity()
        if isinstance(self.notices.life_cycle, Unknown):
            self.refresh_life_cycle()
        if self.source.retry_due():
            self.refresh_tags()
        self.sample()
        decision = self.evaluate("tick")
        self._announcer.prune()
        self.notifier.status(summary(decision, self.now()))
        self.notifier.watchdog()

    def handle(self, event: str) -> bool:
        """One event on the main thread; False when the loop should end."""
        if event == "term":
            return False
        if event == "hup":
            log.info("signal.hup")
            self.reload()
            self.evaluate("hup")
        elif event == "tags":
            if isinstance(self.source.identity, Unknown):
                self.refresh_identity()
            self.refresh_tags()
            self.evaluate("tags")
        elif event == "prepare":
            self.refresh_tags()
            self.evaluate("prepare")
        elif event in ("due", "notice"):
            self.evaluate(event)
        elif event == "clock":
            # The wall clock stepped (or a step was confirmed): APScheduler's jobs were planned on
            # the old wall clock; plan them again (a backward step would stall the tick otherwise).
            self._start_timers(restart=True)
            self.evaluate("clock")
        elif event == "tick":
            self.tick()
        return True

    def _failed(self, exc: Exception, event: str) -> bool:
        """Count a failure; True when MAX_SAME_FAILURES identical ones came in a row."""
        text = f"{type(exc).__name__}: {exc}"
        count = self._failures[1] + 1 if self._failures[0] == text else 1
        self._failures = (text, count)
        self.last_error = text
        log.exception("loop.failure", trigger=event, consecutive=count)
        if count >= MAX_SAME_FAILURES:
            log.error("agent.exit_for_restart", code=EXIT_RESTART, failure=text)
            return True
        return False

    def _start(self) -> str:
        """The first observation and decision, before the timers start; the READY status line."""
        log.info("agent.start", version=__version__, config=str(self.config_path), boot_id=self.store.boot_id,
                 dry_run=self.config.dry_run, backstop=self.config.backstop)
        if self.store.problem:
            log.error("state.problem", problem=self.store.problem)
        try:  # now, so that nothing planted while the agent was down can block a later request
            actions.private_dir(self.runtime)
        except OSError as exc:
            log.error("runtime.private_dir_failed", path=str(self.runtime / actions.PRIVATE_DIR),
                      error=str(exc))
        try:
            self.refresh_identity()
            self.refresh_life_cycle()
            self.refresh_tags()
            if self.notices.wanted:
                self.poll_notices()
            self.sample()
            return summary(self.evaluate("start"), self.now())
        except Exception as exc:  # counted like any loop failure; the loop retries on its ticks
            self._failed(exc, "start")
            return f"degraded: {type(exc).__name__}"

    def run(self) -> int:
        relay = SignalRelay(self._events, {signal.SIGTERM: "term", signal.SIGINT: "term",
                                           signal.SIGHUP: "hup"})
        relay.install()
        ready = self._start()
        self._start_timers()
        if self.decision is not None:
            waiting = self.decision.verb is Verb.WAIT
            self._timers.schedule_due(self.decision.at if waiting else None, self.now())
        self.notifier.ready(ready)
        try:
            while True:
                event = self._events.get()
                try:
                    if not self.handle(event):
                        break
                    self._failures = ("", 0)
                except Exception as exc:  # the loop survives; K identical failures -> exit for restart
                    if self._failed(exc, event):
                        return EXIT_RESTART
        finally:
            self.notifier.stopping("stopping")
            self._timers.stop()
            relay.restore()
        log.info("agent.stop")
        return 0


def _log_clock(change: Change, clock: Clock) -> None:
    fields = {"step_seconds": round(change.step, 1), "source": change.source or None,
              "agent_time": format_timestamp(clock.now())}
    if change.kind == "step":
        log.warning("clock.step", **fields,
                    why="the wall clock moved against the monotonic clock: the agent keeps its own "
                        "time until a second source confirms the wall clock")
    elif change.kind == "confirmed":
        log.warning("clock.confirmed", **fields, why="the wall clock is right: the agent follows it")
    elif change.kind == "refuted":
        log.error("clock.refuted", **fields, why="the wall clock is wrong: the agent keeps its own time")
    else:
        log.info("clock.settled", **fields)


def _ts(moment: datetime | None) -> str | None:
    return format_timestamp(moment) if moment is not None else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
