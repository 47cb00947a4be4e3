"""The agent loop: observe -> decide -> record -> act -> notify the watchdog.

Everything that changes state happens on the main thread, which consumes events from one queue.
APScheduler (3.x, a BackgroundScheduler) only produces events on time:
- ``tick`` every ``config.tick``: sample the idle probes, decide, act, write the status file, and
  then, only then, ``WATCHDOG=1``;
- ``tags`` every ``config.tag_refresh`` (``tag_refresh_api`` when tags come from DescribeTags),
  with jitter;
- (not a scheduler job) the ``notice-poll`` thread, a plain ``Event.wait`` loop every
  ``config.spot_poll`` (<= 2 s): reads the spot and rebalance paths and wakes the loop only when a
  notice it has not seen appears (cheaper than a scheduler job run every 2 s). It reads the
  notices only on a Spot Instance (``instance-life-cycle`` is ``spot``, or not readable yet): AWS
  sends no notices to any other, and the poll was most of an idle on-demand agent's cost;
- (not scheduler jobs) ``due``: a monotonic ``threading.Timer`` at the exact time of the next planned
  action, so the terminate call goes out within moments of the deadline instead of at the next
  tick, and ``prepare`` ``PREPARE_LEAD`` before it; a step of the wall clock moves neither
  (``spored.clock``). On a step detected by the ``clock-watch`` thread (an ``Event.wait`` loop every
  ``CLOCK_CHECK``) the scheduler's interval jobs are planned again.
SIGHUP re-reads the configuration and the tags at once; SIGTERM sends STOPPING=1 and exits 0.

Exit codes: 0 after SIGTERM; 75 (EX_TEMPFAIL) after ``MAX_SAME_FAILURES`` identical consecutive
failures of the loop, so systemd restarts the agent; 78 (EX_CONFIG) for a configuration error at
start, which the unit lists in RestartPreventExitStatus.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from spored import __version__, actions, failsafe, logs
from spored import config as config_mod
from spored.agent_status import WRITE_TIMEOUT, StatusTracker, derive, spawn_writer
from spored.backoff import next_delay
from spored.clock import Change, Clock, reference_from_date
from spored.config import Config
from spored.contract import AGENT_WRITABLE_TAGS, Action, Reason, format_timestamp, is_managed
from spored.decide import Decision, Observations, Verb, decide, summary
from spored.ec2 import Ec2, Ec2CallError
from spored.errors import ConfigError
from spored.exit_codes import AgentExit
from spored.imds_client import ImdsClient
from spored.imds_errors import ImdsError
from spored.observe import (
    Identity,
    Notice,
    Unknown,
    needs_notice_poll,
    read_identity,
    read_life_cycle,
    read_metadata_tags,
    read_notice,
)
from spored.permission_check import PermissionCheck
from spored.probes import (
    Counters,
    Signals,
    read_boot_id,
    read_boot_time,
    read_counters,
    read_gpu,
    read_sessions,
    read_uptime,
    signals_between,
)
from spored.sdnotify import Notifier
from spored.state import ActFailure, AgentState, StateStore, runtime_dir, state_dir, write_atomic

EXIT_RESTART = AgentExit.TEMPFAIL
EXIT_CONFIG = AgentExit.CONFIG
MAX_SAME_FAILURES = 5
STATUS_FILE = "status.json"
# Build the EC2 client (boto3, credentials) this long before a planned action, not at it.
WARM_BEFORE = timedelta(seconds=90)
# Tags re-read this long before a planned action (an early look, for the warning and the log); the
# decision to act always uses a read made right before the destructive call, never an older one.
PREPARE_LEAD = timedelta(seconds=2)
# The wall clock is compared with the monotonic clock this often (spored.clock).
CLOCK_CHECK = timedelta(seconds=2)
# A failed action is retried this often; failed DescribeTags back off from API_RETRY_MIN seconds.
ACT_RETRY = timedelta(seconds=20)
# An action deferred because its fresh metadata read failed (a hiccup) is tried again this soon,
# not at the next tick.
DEFER_RETRY = timedelta(seconds=2)
API_RETRY_MIN = 30.0
# Event priorities: lower first. Pending duplicates are coalesced.
PRIORITY = {"term": 0, "notice": 1, "due": 1, "clock": 1, "prepare": 2, "hup": 2, "tags": 3, "tick": 3}


class EventQueue:
    """Events for the main loop, most urgent first; an event already pending is not queued twice."""

    def __init__(self) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, str]] = queue.PriorityQueue()
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._seq = 0

    def put(self, event: str) -> None:
        with self._lock:
            if event in self._pending:
                return
            self._pending.add(event)
            self._seq += 1
            self._queue.put((PRIORITY.get(event, 3), self._seq, event))

    def get(self, timeout: float) -> str:
        _prio, _seq, event = self._queue.get(timeout=timeout)
        with self._lock:
            self._pending.discard(event)
        return event

log = logs.get("spored.daemon")


def _others(tags: dict[str, str]) -> dict[str, str]:
    """Tags without the ones the agent writes itself."""
    return {k: v for k, v in tags.items() if k not in AGENT_WRITABLE_TAGS}


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
        self.identity: Identity | Unknown = Unknown("not read yet")
        self.life_cycle: str | Unknown = Unknown("not read yet")
        self.tags: dict[str, str] | Unknown = Unknown("not read yet")
        self.tags_source = "none"
        self.last_tag_refresh: datetime | None = None
        self.spot: Notice | Unknown | None = None
        self.rebalance: Notice | Unknown | None = None
        nothing = Unknown("no window yet")
        self.signals = Signals(nothing, nothing, nothing, nothing, None)
        self.uptime: float | Unknown = Unknown("not read yet")
        self._counters: Counters | None = None
        self.decision: Decision | None = None
        self.last_error: str | None = self.store.problem
        self._ec2: Ec2 | None = None
        self._hooks: list[actions.HookRun] = []
        self._events = EventQueue()
        self._seen_notices: set[str] = set(self.state.notices)
        self._lock = threading.Lock()
        self._scheduler: Any = None
        self._poll_stop = threading.Event()
        self._clock_stop = threading.Event()
        self._poll_thread: threading.Thread | None = None
        self._due_at: datetime | None = None
        self._due_timers: list[threading.Timer] = []
        self._failures: tuple[str, int] = ("", 0)
        self._completion_refused = False
        self._marker_pending: Path | None = None
        self._stale_seen: set[tuple[str, float]] = set()
        self._save_error: str | None = None
        self._warmed = False
        self._warning_key: str | None = None
        self._api_backoff = 0.0
        self._api_retry_at = 0.0
        self._last_attempt = -1e9
        self._status_tag = StatusTracker()
        self._status_writer: subprocess.Popen[bytes] | None = None
        self._status_writer_at = 0.0
        self._permissions = PermissionCheck(self.runtime)
        self._failsafe = failsafe.Keeper()

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
            self._log_clock(change)
        if found:
            self._events.put("clock")

    def _log_clock(self, change: Change) -> None:
        fields = {"step_seconds": round(change.step, 1), "source": change.source or None,
                  "agent_time": format_timestamp(self.clock.now())}
        if change.kind == "step":
            log.warning("clock.step", **fields,
                        why="the wall clock moved against the monotonic clock: the agent keeps its own "
                            "time until a second source confirms the wall clock")
        elif change.kind == "confirmed":
            log.warning("clock.confirmed", **fields, why="the wall clock is right: the agent follows it")
        elif change.kind == "refuted":
            log.error("clock.refuted", **fields,
                      why="the wall clock is wrong: the agent keeps its own time")
        else:
            log.info("clock.settled", **fields)

    def ec2(self) -> Ec2 | None:
        if isinstance(self.identity, Unknown):
            return None
        if self._ec2 is None or self._ec2.region != self.identity.region:
            self._ec2 = Ec2(self.identity.region, self.config.ec2_endpoint)
        return self._ec2

    def refresh_identity(self) -> None:
        identity = read_identity(self.imds)
        if isinstance(identity, Identity) or isinstance(self.identity, Unknown):
            self.identity = identity
        if isinstance(identity, Unknown):
            log.warning("identity.unknown", why=identity.why)

    def refresh_life_cycle(self) -> None:
        """Read the purchasing option until it is known, and run the notice poll only on spot."""
        if isinstance(self.life_cycle, Unknown):
            self.life_cycle = read_life_cycle(self.imds)
            if not isinstance(self.life_cycle, Unknown):
                log.info("life_cycle", value=self.life_cycle, notice_poll=needs_notice_poll(self.life_cycle))
        if self._scheduler is None:
            return
        polling = self._poll_thread is not None
        if needs_notice_poll(self.life_cycle) and not polling:
            self._start_notice_poll()
        elif not needs_notice_poll(self.life_cycle) and polling:
            self._stop_notice_poll()

    def read_tags(self) -> tuple[dict[str, str] | Unknown, str, Ec2CallError | None]:
        """Fresh tags: instance metadata when exposed, else DescribeTags on our own instance id."""
        tags = read_metadata_tags(self.imds)
        if tags is not None:
            return tags, "metadata", None
        ec2 = self.ec2()
        if ec2 is None or isinstance(self.identity, Unknown):
            return Unknown("tags not in metadata and identity unknown"), "api", None
        try:
            return ec2.describe_tags(self.identity.instance_id), "api", None
        except Ec2CallError as exc:
            return Unknown(f"DescribeTags: {exc.code}"), "api", exc

    def refresh_tags(self) -> None:
        tags, source, error = self.read_tags()
        self.tags_source = source
        if isinstance(tags, Unknown):
            self.last_error = str(tags)
            if error is not None:  # EC2 refused or throttled: back off (never a call per tick)
                self._api_backoff = next_delay(self._api_backoff, API_RETRY_MIN,
                                               self.config.tag_refresh_api.total_seconds())
                self._api_retry_at = time.monotonic() + self._api_backoff
            log.warning("tags.unknown", why=tags.why, source=source)
            self.tags = tags
            return
        self._api_backoff = 0.0
        previous = self.tags
        # The agent's own status tag is not news: only a change the agent did not write is logged.
        changed = not isinstance(previous, dict) or _others(tags) != _others(previous)
        self.tags = tags
        self.last_tag_refresh = self.now()
        if changed:
            log.info("tags.changed", source=source, managed=is_managed(tags),
                     lifecycle={k: v for k, v in tags.items() if k.startswith("spawn:")})
        self._reschedule_tags()

    def _poll_loop(self, stop: threading.Event, interval: float) -> None:
        while not stop.wait(interval):
            try:
                self.poll_notices()
            except Exception:  # never end the poll; the error is in the log
                log.exception("notice.poll_failed")

    def _clock_loop(self, stop: threading.Event, interval: float) -> None:
        """The clock-watch thread: monotonic waits, so a step of the wall clock cannot stall it."""
        while not stop.wait(interval):
            try:
                self.check_clock()
            except Exception:  # never end the watch; the error is in the log
                log.exception("clock.check_failed")

    def _start_clock_watch(self) -> None:
        self._clock_stop = threading.Event()
        threading.Thread(target=self._clock_loop, args=(self._clock_stop, CLOCK_CHECK.total_seconds()),
                         name="clock-watch", daemon=True).start()

    def _start_notice_poll(self) -> None:
        self._poll_stop = threading.Event()
        self._poll_thread = threading.Thread(
            target=self._poll_loop, args=(self._poll_stop, self.config.spot_poll.total_seconds()),
            name="notice-poll", daemon=True)
        self._poll_thread.start()

    def _stop_notice_poll(self) -> None:
        self._poll_stop.set()
        self._poll_thread = None

    def poll_notices(self) -> None:
        """Notice-poll thread: read spot/rebalance; wake the loop on a notice it has not seen."""
        spot = read_notice(self.imds, "spot")
        rebalance = read_notice(self.imds, "rebalance")
        with self._lock:
            self.spot, self.rebalance = spot, rebalance
            fresh = [n for n in (spot, rebalance)
                     if isinstance(n, Notice) and n.key not in self._seen_notices]
            for notice in fresh:
                self._seen_notices.add(notice.key)
        for notice in fresh:
            log.info("notice.seen", kind=notice.kind, action=notice.action,
                     time=format_timestamp(notice.time))
            self._events.put("notice")

    def sample(self) -> None:
        counters = read_counters(self.proc_root, time.monotonic())
        self.signals = signals_between(self._counters, counters, sessions=read_sessions(self.proc_root),
                                       gpu=read_gpu())
        self._counters = counters
        self.uptime = read_uptime(self.proc_root)
        if not self.read_only:
            self._check_completion_marker()

    def _check_completion_marker(self) -> None:
        """Take a completion from the marker. The marker is removed only once the completion is
        in the saved state (``_save_state``): if the state cannot be written, the completion stays
        in memory and the marker stays on disk for the next start."""
        marker = Path(self.config.completion_marker)
        try:
            info = marker.stat()
        except OSError:
            return
        try:
            mode = marker.parent.stat().st_mode
        except OSError:
            return
        if mode & 0o002:
            if not self._completion_refused:
                log.error("completion.refused", marker=str(marker),
                          why="its directory is world-writable: any local user could end the instance")
                self.last_error = f"completion marker refused: {marker.parent} is world-writable"
                self._completion_refused = True
            return
        boot = read_boot_time(self.proc_root)
        if isinstance(boot, float) and info.st_mtime < boot:
            self._stale_marker(marker, info.st_mtime, boot)
            return
        if self.state.completed_at is None:
            # When the workload said so (the marker's time), not when the agent noticed.
            written = min(datetime.fromtimestamp(info.st_mtime, UTC), self.now())
            self.state = replace(self.state, completed_at=written)
            log.info("completion.marker", marker=str(marker), written_at=format_timestamp(written),
                     delay=str(self.config.completion_delay))
        self._marker_pending = marker

    def _stale_marker(self, marker: Path, mtime: float, boot: float) -> None:
        """A marker written before this boot (on persistent storage): never a completion now."""
        key = (str(marker), mtime)
        if key in self._stale_seen:
            return
        self._stale_seen.add(key)
        log.warning("completion.stale_marker", marker=str(marker),
                    written_at=format_timestamp(datetime.fromtimestamp(mtime, UTC)),
                    boot_time=format_timestamp(datetime.fromtimestamp(boot, UTC)),
                    why="written before this boot: ignored")
        try:
            marker.unlink()
        except OSError as exc:
            log.error("completion.unconsumable", marker=str(marker), error=exc.strerror)

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
        marker, self._marker_pending = self._marker_pending, None
        if marker is not None:
            try:
                marker.unlink()
                log.info("completion.consumed", marker=str(marker))
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("completion.unconsumable", marker=str(marker), error=exc.strerror)
        return True

    def observations(self) -> Observations:
        with self._lock:
            spot, rebalance = self.spot, self.rebalance
        return Observations(identity=self.identity, tags=self.tags, spot=spot, rebalance=rebalance,
                            signals=self.signals, uptime=self.uptime)

    # ---------------------------------------------------------------- decision and action
    def decide_only(self) -> Decision:
        self.decision = decide(self.state, self.observations(), self.now(), self.config)
        return self.decision

    def evaluate(self, trigger: str) -> Decision:
        now = self.now()
        decision = decide(self.state, self.observations(), now, self.config)
        if decision.policy.source == "tags" and decision.policy.valid_tags != self.state.last_good_tags:
            self.state = replace(self.state, last_good_tags=dict(decision.policy.valid_tags))
        self.state = replace(self.state, idle_since=decision.idle_since)
        for problem in decision.problems:
            if self.decision is None or problem not in self.decision.problems:
                log.warning("policy.problem", problem=problem)
        if self.decision is None or (decision.verb, decision.key) != (self.decision.verb, self.decision.key):
            log.info("decision", trigger=trigger, verb=str(decision.verb),
                     action=str(decision.action) if decision.action else None,
                     reason=str(decision.reason) if decision.reason else None,
                     at=format_timestamp(decision.at) if decision.at else None,
                     explanation=decision.explanation)
        self.decision = decision
        if self._warning_key is not None and decision.key != self._warning_key \
                and decision.verb in (Verb.WAIT, Verb.NONE) and decision.key not in self.state.done:
            actions.clear_warning(self.runtime)  # the warned action is no longer planned (extended)
            self._warning_key = None
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
            self._notice(decision)
        elif decision.verb is Verb.BACKSTOP:
            self._backstop(decision)
        elif decision.verb is Verb.WAIT:
            self._prepare(decision)
        final = self.decision  # _act may have replaced it (tags changed right before acting)
        self._schedule_due(final.at if final.verb is Verb.WAIT else None)
        self._save_state()
        self.write_status()
        if not self.read_only:
            self.publish_status(final)
            self._keep_safety_layers(final)
        return final

    # ---------------------------------------------------------------- safety layers
    def _keep_safety_layers(self, decision: Decision) -> None:
        """The permission proof (a child, at start and when the lifecycle action changes) and the
        OS failsafe's re-arm request. Only for a managed instance whose tags were read."""
        monotonic = time.monotonic()
        result = self._permissions.reap(monotonic)
        if result is not None:
            self.write_status()
        policy = decision.policy
        identity = self.identity
        if isinstance(identity, Unknown) or policy.source != "tags":
            return  # keep what was last requested: unknown data changes nothing
        # One child at a time: each loads boto3, and two at once slow a small instance down.
        if policy.managed and self._status_writer is None:
            wanted = tuple(dict.fromkeys((policy.on_complete, policy.on_idle)))
            if self._permissions.due(wanted, monotonic):
                try:
                    self._permissions.start(identity.region, identity.instance_id, wanted, monotonic,
                                            self.config.ec2_endpoint)
                    log.info("permissions.check_started", actions=[str(a) for a in wanted])
                except OSError as exc:
                    log.error("permissions.check_failed", error=exc.strerror)
        if not self.config.failsafe:
            return
        at = failsafe.failsafe_at(deadline=policy.deadline, idle_timeout=policy.idle_timeout, now=self.now(),
                                  grace=self.config.failsafe_grace) if policy.managed else None
        sliding = policy.managed and policy.deadline is None and at is not None
        if not self._failsafe.due(at, sliding=sliding):
            return
        try:
            path = actions.request_failsafe(self.runtime, at)
        except OSError as exc:
            log.error("failsafe.request_failed", error=exc.strerror)
            return
        self._failsafe.written(at, sliding=sliding)
        log.info("failsafe.requested", at=_ts(at), path=str(path),
                 window="sliding" if sliding else ("deadline + grace" if at else "none (not managed)"))

    def _warn(self, decision: Decision, message: str) -> None:
        if decision.action is None or decision.reason is None or decision.at is None:
            return
        log.warning("warning", action=str(decision.action), reason=str(decision.reason),
                    at=format_timestamp(decision.at), message=message)
        try:
            actions.write_warning(self.runtime, action=decision.action, reason=decision.reason,
                                  at=decision.at, message=message)
            self._warning_key = decision.key
        except OSError as exc:
            log.error("warning.file_failed", error=exc.strerror)
        if self.config.wall:
            actions.wall(f"spored: {message}")

    def _prepare(self, decision: Decision) -> None:
        if decision.at is None or decision.key is None or decision.reason is None:
            return
        if decision.warn:
            self._warn(decision, f"this instance will {decision.explanation}")
            self.state = replace(self.state, warned=(*self.state.warned, *decision.warn))
        if decision.hook and decision.hook_until is not None:
            self._start_hook(decision.reason, str(decision.action), decision.hook_until, decision.key)
        if decision.at - self.now() <= WARM_BEFORE and not self._warmed:
            ec2 = self.ec2()
            if ec2 is not None and not self.config.dry_run:
                self._warmed = True
                threading.Thread(target=ec2.warm, name="ec2-warm", daemon=True).start()

    def _start_hook(self, reason: Reason, action: str, until: datetime, key: str) -> None:
        self.state = replace(self.state, hooks=(*self.state.hooks, key))
        run = actions.start_hook(self.config.pre_stop_hook, reason=reason, action=action, until=until)
        if run is not None:
            self._hooks.append(run)

    def _notice(self, decision: Decision) -> None:
        if decision.key is None or decision.reason is None or decision.at is None:
            return
        self.state = replace(self.state, notices=(*self.state.notices, decision.key))
        spot = decision.reason is Reason.SPOT_INTERRUPTION
        # The notice's own action: terminate, stop or hibernate; "none" for a rebalance
        # recommendation (nothing is ended); "unknown" for a spot payload naming anything else.
        action = str(decision.action) if decision.action else ("unknown" if spot else "none")
        message = (f"AWS will {action if decision.action else 'reclaim'} this spot instance at "
                   f"{format_timestamp(decision.at)}" if spot
                   else "AWS recommends rebalancing: this spot instance is at elevated risk of interruption")
        log.warning("notice", reason=str(decision.reason), action=action, at=format_timestamp(decision.at))
        try:  # before the hook starts: the hook may read it
            actions.write_warning(self.runtime, action=action, reason=decision.reason,
                                  at=decision.at, message=message)
        except OSError as exc:
            log.error("warning.file_failed", error=exc.strerror)
        if decision.hook and decision.hook_until is not None:
            self._start_hook(decision.reason, action, decision.hook_until, decision.key)
        if self.config.wall:
            actions.wall(f"spored: {message}")

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
        if isinstance(self.identity, Unknown):
            self.refresh_identity()
        identity = self.identity
        tags, source, error = self.read_tags()
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
                if self._scheduler is not None:  # APScheduler plans on the system's wall clock
                    self._scheduler.add_job(self._events.put, "date", args=["due"], id="deferred",
                                            run_date=datetime.now(UTC) + DEFER_RETRY,
                                            replace_existing=True, misfire_grace_time=None)
            return
        self.tags, self.tags_source, self.last_tag_refresh = tags, source, self.now()
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
        ec2 = self.ec2()
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
        identity = self.identity
        return {
            "version": __version__,
            "pid": os.getpid(),
            "updated_at": format_timestamp(now),
            "tick_seconds": self.config.tick.total_seconds(),
            "instance_id": None if isinstance(identity, Unknown) else identity.instance_id,
            "life_cycle": str(self.life_cycle),
            "notice_poll": self._poll_thread is not None,
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
                "completed_at": _ts(self.state.completed_at),
                # True while a completion is held in memory only (the state could not be saved).
                "marker_pending": self._marker_pending is not None,
                "action_at": format_timestamp(self.state.completed_at + self.config.completion_delay)
                if self.state.completed_at else None,
            },
            "tags": {"source": self.tags_source,
                     "last_refresh": _ts(self.last_tag_refresh)},
            "last_error": self.last_error,
            "permissions": self._permissions.result,
            "failsafe_at": _ts(self._failsafe.requested),
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
        self._reap_status_writer()
        failure = self.state.failure
        denied = self._permissions.denied
        status = derive(decision, self.observations(), warned=self._warning_key is not None,
                        failing=(failure is not None and failure.key == decision.key) or bool(denied))
        self._status_tag.observe(status, self.now(),
                                 detail=(self._permissions.summary() or "") if denied else "")
        identity = self.identity
        if isinstance(identity, Unknown) or not decision.policy.managed:
            return  # never on an instance that is not ours to manage
        value = self._status_tag.due(time.monotonic())
        if value is None:
            return
        if self.config.dry_run:
            log.info("status_tag.dry_run", value=value, instance_id=identity.instance_id)
            self._status_tag.started(value)
            self._status_tag.finished(True, time.monotonic())
            return
        log.info("status_tag.write", value=value, instance_id=identity.instance_id)
        self._status_tag.started(value)
        try:
            self._status_writer = spawn_writer(identity.region, identity.instance_id, value,
                                               self.config.ec2_endpoint)
            self._status_writer_at = time.monotonic()
        except OSError as exc:
            log.error("status_tag.failed", error=exc.strerror)
            self._status_tag.finished(False, time.monotonic())

    def _reap_status_writer(self) -> None:
        proc = self._status_writer
        if proc is None:
            return
        code = proc.poll()
        if code is None:
            if time.monotonic() - self._status_writer_at < WRITE_TIMEOUT:
                return
            proc.kill()
            code = proc.wait()
            log.error("status_tag.timeout", seconds=WRITE_TIMEOUT)
        elif code != 0:
            log.error("status_tag.failed", exit_code=code)
        self._status_writer = None
        self._status_tag.finished(code == 0, time.monotonic())

    def write_status(self) -> None:
        try:
            write_atomic(self.runtime / STATUS_FILE, json.dumps(self.status(), indent=1) + "\n", mode=0o644,
                         durable=False)
        except OSError as exc:
            log.error("status.write_failed", error=exc.strerror)

    # ---------------------------------------------------------------- scheduling
    def _reschedule_tags(self) -> None:
        if self._scheduler is None:
            return
        interval = self.config.tag_refresh if self.tags_source == "metadata" else self.config.tag_refresh_api
        job = self._scheduler.get_job("tags")
        seconds = interval.total_seconds()
        if job is None or getattr(job.trigger, "interval", None) != timedelta(seconds=seconds):
            self._scheduler.add_job(self._events.put, "interval", args=["tags"], id="tags",
                                    seconds=seconds, jitter=max(1, int(seconds * 0.1)),
                                    replace_existing=True)

    def _schedule_due(self, at: datetime | None) -> None:
        """A timer at the exact time of the next action, and one PREPARE_LEAD before it that takes
        an early look at the tags. They are monotonic timers (threading.Timer waits on the
        monotonic clock) set from the agent's time: a step of the wall clock moves neither."""
        if self._scheduler is None or at == self._due_at:
            return
        self._due_at = at
        self._cancel_due()
        left = (at - self.now()).total_seconds() if at is not None else 0.0
        if left <= 0:
            return
        plan = [("due", left)]
        if left > PREPARE_LEAD.total_seconds():
            plan.append(("prepare", left - PREPARE_LEAD.total_seconds()))
        for event, seconds in plan:
            timer = threading.Timer(seconds, self._events.put, args=[event])
            timer.daemon = True
            timer.name = f"{event}-timer"
            timer.start()
            self._due_timers.append(timer)

    def _cancel_due(self) -> None:
        for timer in self._due_timers:
            timer.cancel()
        self._due_timers = []

    def _start_scheduler(self) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        sched = BackgroundScheduler(timezone=UTC, executors={"default": ThreadPoolExecutor(2)},
                                    job_defaults={"coalesce": True, "max_instances": 1,
                                                  "misfire_grace_time": None})
        sched.add_job(self._events.put, "interval", args=["tick"], id="tick",
                      seconds=self.config.tick.total_seconds())
        self._scheduler = sched
        self._reschedule_tags()
        sched.start()
        self._start_clock_watch()
        if needs_notice_poll(self.life_cycle):
            self._start_notice_poll()

    def _restart_scheduler(self) -> None:
        self._stop_notice_poll()
        self._clock_stop.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
            self._due_at = None
            self._cancel_due()
        self._start_scheduler()

    # ---------------------------------------------------------------- loop
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._events.put("hup" if signum == signal.SIGHUP else "term")

    def reload(self) -> None:
        try:
            cfg = config_mod.load(self.config_path)
        except ConfigError as exc:
            log.error("config.reload_failed", error=exc.message, kept="previous configuration")
            self.last_error = exc.message
            return
        changed = cfg != self.config
        self.config = cfg
        if cfg.imds_endpoint != self.imds.base and cfg.imds_endpoint:
            self.imds = ImdsClient(cfg.imds_endpoint)
        log.info("config.reloaded", changed=changed)
        self.refresh_identity()
        self.refresh_tags()
        if changed:
            self._restart_scheduler()

    def tick(self) -> None:
        if isinstance(self.identity, Unknown):
            self.refresh_identity()
        if isinstance(self.life_cycle, Unknown):
            self.refresh_life_cycle()
        if isinstance(self.tags, Unknown) and time.monotonic() >= self._api_retry_at:
            self.refresh_tags()
        self.sample()
        decision = self.evaluate("tick")
        self._hooks = [h for h in self._hooks if h.running]
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
            if isinstance(self.identity, Unknown):
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
            self._restart_scheduler()
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

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("agent.start", version=__version__, config=str(self.config_path), boot_id=self.store.boot_id,
                 dry_run=self.config.dry_run, backstop=self.config.backstop)
        if self.store.problem:
            log.error("state.problem", problem=self.store.problem)
        try:  # now, so that nothing planted while the agent was down can block a later request
            actions.private_dir(self.runtime)
        except OSError as exc:
            log.error("runtime.private_dir_failed", path=str(self.runtime / actions.PRIVATE_DIR),
                      error=str(exc))
        ready = "starting"
        try:
            self.refresh_identity()
            self.refresh_life_cycle()
            self.refresh_tags()
            if needs_notice_poll(self.life_cycle):
                self.poll_notices()
            self.sample()
            decision = self.evaluate("start")
            ready = summary(decision, self.now())
        except Exception as exc:  # counted like any loop failure; the loop retries on its ticks
            self._failed(exc, "start")
            ready = f"degraded: {type(exc).__name__}"
        self._start_scheduler()
        if self.decision is not None:
            self._schedule_due(self.decision.at if self.decision.verb is Verb.WAIT else None)
        self.notifier.ready(ready)
        try:
            while True:
                try:
                    event = self._events.get(timeout=1.0)
                except queue.Empty:
                    continue
                try:
                    if not self.handle(event):
                        break
                    self._failures = ("", 0)
                except Exception as exc:  # the loop survives; K identical failures -> exit for restart
                    if self._failed(exc, event):
                        return EXIT_RESTART
        finally:
            self.notifier.stopping("stopping")
            self._stop_notice_poll()
            self._clock_stop.set()
            self._cancel_due()
            if self._scheduler is not None:
                self._scheduler.shutdown(wait=False)
        log.info("agent.stop")
        return 0


def _ts(moment: datetime | None) -> str | None:
    return format_timestamp(moment) if moment is not None else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
