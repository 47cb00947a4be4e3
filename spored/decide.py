"""The decision: a pure function of saved state, observations, configuration and the time.

Priority: a spot interruption or rebalance notice, then the TTL deadline, then completion, then
idle. Any action is announced by warnings (10, 5 and 1 minutes, or what remains), each given once.
Unknown or invalid data never makes an action happen: without the identity document or with
``spawn:managed`` other than ``true`` the answer is always "nothing". No I/O here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from spored.config import Config
from spored.contract import Action, Reason, format_duration, format_remaining, format_timestamp
from spored.failsafe import SHUTDOWN_BEHAVIOUR
from spored.observe import Identity, Notice, Unknown
from spored.policy import Policy, resolve
from spored.probes import Signals
from spored.state import AgentState

# The pre-stop hook for a spot notice must end this long before the notice's time.
NOTICE_MARGIN = timedelta(seconds=5)
PRIORITY = (Reason.TTL_EXPIRED, Reason.COMPLETED, Reason.IDLE)


class Verb(enum.StrEnum):
    NONE = "none"          # nothing planned
    WAIT = "wait"          # an action is planned at ``at``
    ACT = "act"            # do ``action`` now
    NOTICE = "notice"      # spot/rebalance: hook, warn, log; AWS reclaims
    BACKSTOP = "backstop"  # request an OS power-off


@dataclass(frozen=True)
class Observations:
    identity: Identity | Unknown
    tags: dict[str, str] | Unknown
    spot: Notice | Unknown | None
    rebalance: Notice | Unknown | None
    signals: Signals
    uptime: float | Unknown


@dataclass(frozen=True)
class IdleSignal:
    name: str
    value: float | None
    threshold: float | None
    idle: bool
    note: str = ""


@dataclass(frozen=True)
class Decision:
    verb: Verb
    explanation: str
    policy: Policy
    idle_since: datetime | None
    idle: tuple[IdleSignal, ...]
    action: Action | None = None
    reason: Reason | None = None
    at: datetime | None = None
    # Identity of the planned action ("ttl-expired@2026-11-28T17:00:00Z") or of the notice.
    key: str | None = None
    # Warning keys due now (given together, once) and the pre-stop hook to start now.
    warn: tuple[str, ...] = ()
    hook: bool = False
    hook_until: datetime | None = None
    problems: tuple[str, ...] = field(default_factory=tuple)


def notice_action(notice: Notice) -> Action | None:
    """The action a spot notice announces (``terminate``, ``stop`` or ``hibernate``); None when
    the payload names something else (reported by the caller, never guessed as terminate)."""
    try:
        return Action(notice.action)
    except ValueError:
        return None


def plan_key(reason: Reason, at: datetime) -> str:
    return f"{reason.value}@{format_timestamp(at)}"


def classify_idle(signals: Signals, policy: Policy) -> tuple[tuple[IdleSignal, ...], bool]:
    """Per-signal verdicts; the window is idle only if every signal is known and under threshold."""
    th = policy.thresholds
    out: list[IdleSignal] = []

    def rate(name: str, value: float | Unknown | None, threshold: float) -> None:
        if value is None:
            return
        if isinstance(value, Unknown):
            out.append(IdleSignal(name, None, threshold, False, f"{value} counts as active"))
        else:
            out.append(IdleSignal(name, round(value, 2), threshold, value < threshold))

    rate("cpu_percent", signals.cpu_percent, th.cpu_percent)
    rate("net_bytes_per_sec", signals.net_bytes_per_sec, th.net_bytes_per_sec)
    rate("disk_bytes_per_sec", signals.disk_bytes_per_sec, th.disk_bytes_per_sec)
    rate("gpu_percent", signals.gpu_percent, th.gpu_percent)
    if isinstance(signals.sessions, Unknown):
        out.append(IdleSignal("sessions", None, 0, False, f"{signals.sessions} counts as active"))
    else:
        out.append(IdleSignal("sessions", signals.sessions, 0, signals.sessions == 0))
    return tuple(out), all(s.idle for s in out)


_Answer = Callable[..., Decision]
_Plan = tuple[datetime, Reason, Action]


def decide(state: AgentState, obs: Observations, now: datetime, config: Config) -> Decision:
    """The one decision per tick, in priority order: no identity or not managed -> nothing;
    an unhandled spot/rebalance notice; a planned action that is due (TTL, completion, idle);
    else wait for the earliest planned one."""
    if now.tzinfo is None:
        raise ValueError("decide() needs an aware datetime")
    identity = obs.identity
    tags = None if isinstance(obs.tags, Unknown) else obs.tags
    launch = None if isinstance(identity, Unknown) else identity.launch_time
    policy = resolve(tags, config.lifecycle, launch, state.last_good_tags, now)
    problems = policy.problems
    if isinstance(obs.tags, Unknown):
        problems = (f"tags: {obs.tags}", *problems)
    idle, window_idle = classify_idle(obs.signals, policy)
    in_grace = isinstance(obs.uptime, Unknown) or obs.uptime < config.boot_grace.total_seconds()
    idle_since = (state.idle_since or now) if window_idle and not in_grace else None

    def answer(verb: Verb, explanation: str, **kw: object) -> Decision:
        return Decision(verb=verb, explanation=explanation, policy=policy, idle_since=idle_since,
                        idle=idle, problems=problems, **kw)  # type: ignore[arg-type]

    if isinstance(identity, Unknown):
        return answer(Verb.NONE, f"identity {identity}: nothing is done without it")
    if not policy.managed:
        return answer(Verb.NONE, "spawn:managed is not true: spored never acts on this instance")

    # 1. Spot interruption, then rebalance: each handled once.
    noticed = _notice(state, obs, now, config, answer)
    if noticed is not None:
        return noticed

    # 2-4. Planned actions: TTL, completion, idle.
    plans = _plans(state, policy, idle_since, config)
    due = sorted((p for p in plans if p[0] <= now), key=lambda p: PRIORITY.index(p[1]))
    if due:
        return _due(due[0], state, now, config, answer=answer, policy=policy)
    if not plans:
        return answer(Verb.NONE, _nothing_planned(policy, idle_since, in_grace))
    earliest = min(plans, key=lambda p: (p[0], PRIORITY.index(p[1])))
    return _wait(earliest, state, now, config, answer=answer, policy=policy)


def _notice(state: AgentState, obs: Observations, now: datetime, config: Config,
            answer: _Answer) -> Decision | None:
    """A spot interruption notice, then a rebalance recommendation, not handled yet; else None."""
    for notice, reason in ((obs.spot, Reason.SPOT_INTERRUPTION), (obs.rebalance, Reason.REBALANCE)):
        if isinstance(notice, Notice) and notice.key not in state.notices:
            limit = now + config.pre_stop_timeout
            if reason is Reason.SPOT_INTERRUPTION:
                limit = min(limit, notice.time - NOTICE_MARGIN)
            what = (f"spot {notice.action} at {format_timestamp(notice.time)}"
                    if reason is Reason.SPOT_INTERRUPTION
                    else f"rebalance recommended at {format_timestamp(notice.time)}")
            # The notice's own action (AWS may stop or hibernate a spot instance, not only
            # terminate it); a rebalance recommendation ends nothing, so it carries none.
            return answer(Verb.NOTICE, f"{what}: pre-stop hook, warning; AWS reclaims",
                          action=notice_action(notice) if reason is Reason.SPOT_INTERRUPTION else None,
                          reason=reason, at=notice.time, key=notice.key,
                          hook=bool(config.pre_stop_hook) and limit > now, hook_until=limit)
    return None


def _plans(state: AgentState, policy: Policy, idle_since: datetime | None, config: Config) -> list[_Plan]:
    """Every planned end (when, why, what): the deadline, completion plus its delay, idle."""
    plans: list[_Plan] = []
    if policy.deadline is not None:
        plans.append((policy.deadline, Reason.TTL_EXPIRED, policy.on_complete))
    if state.completed_at is not None:
        plans.append((state.completed_at + config.completion_delay, Reason.COMPLETED, policy.on_complete))
    if policy.idle_timeout is not None and idle_since is not None:
        plans.append((idle_since + policy.idle_timeout, Reason.IDLE, policy.on_idle))
    return plans


def _due(plan: _Plan, state: AgentState, now: datetime, config: Config, *, answer: _Answer,
         policy: Policy) -> Decision:
    """The highest-priority due plan: act, or wait for AWS once requested, or fall back to an
    OS power-off when the call keeps failing."""
    at, reason, action = plan
    key = plan_key(reason, at)
    failure = state.failure
    # The fallback ladder: the call is denied or keeps failing (any kind) -> OS power-off,
    # which the instance's shutdown behaviour turns into the lifecycle's action.
    if (config.backstop and failure is not None and failure.key == key
            and now >= max(at, failure.since) + config.backstop_after):
        if f"backstop@{key}" in state.done:
            return answer(Verb.NONE, f"power-off requested at {state.done[f'backstop@{key}']}",
                          action=action, reason=reason, at=at, key=key)
        return answer(Verb.BACKSTOP,
                      f"{action} failed ({failure.kind}) for {format_remaining(now - failure.since)}; "
                      f"requesting an OS power-off (shutdown behaviour: {SHUTDOWN_BEHAVIOUR[action]})",
                      action=action, reason=reason, at=at, key=key)
    if key in state.done:
        return answer(Verb.NONE, f"{action} already requested at {state.done[key]} ({reason}); "
                      "waiting for AWS", action=action, reason=reason, at=at, key=key)
    return answer(Verb.ACT, f"{_because(reason, policy)}: {action} now",
                  action=action, reason=reason, at=at, key=key)


def _wait(plan: _Plan, state: AgentState, now: datetime, config: Config, *, answer: _Answer,
          policy: Policy) -> Decision:
    """Wait for the earliest plan, with the warnings and the pre-stop hook now due."""
    at, reason, action = plan
    key = plan_key(reason, at)
    remaining = at - now
    warn = tuple(f"{key}/{format_duration(w)}" for w in config.warn_at if remaining <= w)
    warn = warn if any(k not in state.warned for k in warn) else ()
    hook = bool(config.pre_stop_hook) and remaining <= config.pre_stop_timeout and key not in state.hooks
    return answer(Verb.WAIT,
                  f"{action} at {format_timestamp(at)} (in {format_remaining(remaining)}): "
                  f"{_because(reason, policy)}",
                  action=action, reason=reason, at=at, key=key, warn=warn, hook=hook,
                  hook_until=at if hook else None)


def _because(reason: Reason, policy: Policy) -> str:
    if reason is Reason.TTL_EXPIRED:
        return f"deadline from {policy.deadline_source}"
    if reason is Reason.COMPLETED:
        return "the workload completed (spored complete)"
    timeout = format_duration(policy.idle_timeout) if policy.idle_timeout else "?"
    return f"idle for {timeout} (every signal under its threshold)"


def _nothing_planned(policy: Policy, idle_since: datetime | None, in_grace: bool) -> str:
    parts = ["no deadline (no spawn:expires-at or spawn:ttl)"]
    if policy.idle_timeout is None:
        parts.append("no idle timeout")
    elif in_grace:
        parts.append("idle detection waits for the boot grace period")
    elif idle_since is None:
        parts.append("not idle")
    return "; ".join(parts)


def summary(decision: Decision, now: datetime) -> str:
    """One line for systemd's STATUS=: "terminate at 17:00Z, idle 12m/60m"."""
    parts: list[str] = []
    if decision.verb is Verb.NONE and decision.action is None:
        parts.append(decision.explanation.split(":")[0])
    elif decision.at is not None and decision.action is not None:
        parts.append(f"{decision.action} at {decision.at.strftime('%H:%MZ')} ({decision.reason})")
    policy = decision.policy
    if policy.idle_timeout is not None:
        idle_for = now - decision.idle_since if decision.idle_since else timedelta(0)
        parts.append(f"idle {int(idle_for.total_seconds() // 60)}m/"
                     f"{int(policy.idle_timeout.total_seconds() // 60)}m")
    if decision.problems:
        parts.append(f"{len(decision.problems)} problem(s)")
    return ", ".join(parts)
