"""The agent's decision, table-driven, with an injected clock (no mocks: decide() is pure)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from spored.config import Config, Lifecycle
from spored.contract import Action, Reason
from spored.decide import Decision, Observations, Verb, decide, summary
from spored.observe import Identity, Notice, Unknown
from spored.probes import Signals
from spored.state import ActFailure, AgentState

LAUNCH = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
ID = Identity(instance_id="i-0123456789abcdef0", region="us-east-1", account_id="123456789012",
              instance_type="t3.micro", launch_time=LAUNCH)
BUSY = Signals(cpu_percent=80.0, net_bytes_per_sec=0.0, disk_bytes_per_sec=0.0, sessions=0,
               gpu_percent=None)
QUIET = Signals(cpu_percent=1.0, net_bytes_per_sec=100.0, disk_bytes_per_sec=0.0, sessions=0,
                gpu_percent=None)
MANAGED = {"spawn:managed": "true"}
TTL_KEY = "ttl-expired@2026-11-28T13:00:00Z"


def failed(kind: str, *, key: str = TTL_KEY) -> AgentState:
    return AgentState(failure=ActFailure(key, kind, at(60), kind))

CFG = Config(pre_stop_hook="/usr/local/bin/checkpoint")


def at(minutes: float) -> datetime:
    return LAUNCH + timedelta(minutes=minutes)


@dataclass
class Case:
    name: str
    tags: dict[str, str] | Unknown
    now: datetime
    verb: Verb
    action: Action | None = None
    reason: Reason | None = None
    when: datetime | None = None
    identity: Identity | Unknown = ID
    signals: Signals = BUSY
    uptime: float | Unknown = 3600.0
    state: AgentState = field(default_factory=AgentState)
    config: Config = CFG
    spot: Notice | Unknown | None = None
    rebalance: Notice | Unknown | None = None


def run(case: Case) -> Decision:
    obs = Observations(identity=case.identity, tags=case.tags, spot=case.spot, rebalance=case.rebalance,
                       signals=case.signals, uptime=case.uptime)
    return decide(case.state, obs, case.now, case.config)


SPOT = Notice(kind="spot", action="terminate", time=at(62), key="spot-abc")
REBALANCE = Notice(kind="rebalance", action="rebalance", time=at(59), key="rebalance-abc")
TTL1H = {**MANAGED, "spawn:ttl": "1h"}

CASES = [
    # --- TTL and the absolute deadline
    Case("ttl not yet due: wait for launch+ttl", TTL1H, at(30), Verb.WAIT, Action.TERMINATE,
         Reason.TTL_EXPIRED, at(60)),
    Case("ttl due exactly at the deadline", TTL1H, at(60), Verb.ACT, Action.TERMINATE,
         Reason.TTL_EXPIRED, at(60)),
    Case("ttl long past (agent restarted late) still acts", TTL1H, at(600), Verb.ACT, Action.TERMINATE,
         Reason.TTL_EXPIRED, at(60)),
    Case("expires-at wins over ttl", {**TTL1H, "spawn:expires-at": "2026-11-28T15:00:00Z"}, at(90),
         Verb.WAIT, Action.TERMINATE, Reason.TTL_EXPIRED, at(180)),
    Case("1d ttl is understood (one grammar)", {**MANAGED, "spawn:ttl": "1d"}, at(60 * 24), Verb.ACT,
         Action.TERMINATE, Reason.TTL_EXPIRED, at(60 * 24)),
    Case("on-complete stop applies to the TTL", {**TTL1H, "spawn:on-complete": "stop"}, at(61), Verb.ACT,
         Action.STOP, Reason.TTL_EXPIRED, at(60)),
    # --- never the wrong instance, never on missing data
    Case("not managed: never acts", {"spawn:ttl": "1h"}, at(600), Verb.NONE),
    Case("managed=false: never acts", {**TTL1H, "spawn:managed": "false"}, at(600), Verb.NONE),
    Case("managed=TRUE is not true: never acts", {**TTL1H, "spawn:managed": "TRUE"}, at(600), Verb.NONE),
    Case("managed='true ' is not true: never acts", {**TTL1H, "spawn:managed": "true "}, at(600),
         Verb.NONE),
    Case("managed=yes, even with a last good 'true': never acts", {**TTL1H, "spawn:managed": "yes"},
         at(600), Verb.NONE, state=AgentState(last_good_tags=TTL1H)),
    Case("identity unknown: never acts", TTL1H, at(600), Verb.NONE, identity=Unknown("imds down")),
    Case("tags unreadable, no last good, no config ttl: nothing", Unknown("imds down"), at(600), Verb.NONE),
    Case("tags unreadable: last good tags stay in force", Unknown("throttled"), at(61), Verb.ACT,
         Action.TERMINATE, Reason.TTL_EXPIRED, at(60), state=AgentState(last_good_tags=TTL1H)),
    # --- invalid values: reported, last good value or the config fallback stays in force
    Case("invalid ttl falls back to the last good ttl", {**MANAGED, "spawn:ttl": "forever"}, at(61), Verb.ACT,
         Action.TERMINATE, Reason.TTL_EXPIRED, at(60), state=AgentState(last_good_tags=TTL1H)),
    Case("invalid ttl falls back to the config ttl", {**MANAGED, "spawn:ttl": "1 day"}, at(100), Verb.WAIT,
         Action.TERMINATE, Reason.TTL_EXPIRED, at(120),
         config=replace(CFG, lifecycle=Lifecycle(ttl=timedelta(hours=2)))),
    Case("invalid expires-at falls back to ttl", {**TTL1H, "spawn:expires-at": "tomorrow"}, at(61), Verb.ACT,
         Action.TERMINATE, Reason.TTL_EXPIRED, at(60)),
    Case("year-3000 expires-at is refused: the ttl stays in force",
         {**TTL1H, "spawn:expires-at": "3000-01-01T00:00:00Z"}, at(61), Verb.ACT, Action.TERMINATE,
         Reason.TTL_EXPIRED, at(60)),
    Case("year-3000 expires-at: the last good expires-at stays in force",
         {**MANAGED, "spawn:expires-at": "3000-01-01T00:00:00Z"}, at(121), Verb.ACT, Action.TERMINATE,
         Reason.TTL_EXPIRED, at(120),
         state=AgentState(last_good_tags={**MANAGED, "spawn:expires-at": "2026-11-28T14:00:00Z"})),
    Case("expires-at 366 days ahead is accepted", {**TTL1H, "spawn:expires-at": "2027-11-29T12:00:00Z"},
         at(0), Verb.WAIT, Action.TERMINATE, Reason.TTL_EXPIRED, LAUNCH + timedelta(days=366)),
    # --- spot and rebalance first, once each
    Case("spot notice: hook, warn; before a due ttl", TTL1H, at(60), Verb.NOTICE, Action.TERMINATE,
         Reason.SPOT_INTERRUPTION, at(62), spot=SPOT),
    Case("spot stop notice carries its own action", TTL1H, at(30), Verb.NOTICE, Action.STOP,
         Reason.SPOT_INTERRUPTION, at(62), spot=replace(SPOT, action="stop", key="spot-stop")),
    Case("spot hibernate notice carries its own action", TTL1H, at(30), Verb.NOTICE, Action.HIBERNATE,
         Reason.SPOT_INTERRUPTION, at(62), spot=replace(SPOT, action="hibernate", key="spot-hib")),
    Case("spot notice already handled: ttl proceeds", TTL1H, at(60), Verb.ACT, Action.TERMINATE,
         Reason.TTL_EXPIRED, at(60), spot=SPOT, state=AgentState(notices=("spot-abc",))),
    Case("rebalance recommendation: hook once", TTL1H, at(30), Verb.NOTICE, None, Reason.REBALANCE, at(59),
         rebalance=REBALANCE),
    Case("unknown spot reading does nothing by itself", TTL1H, at(30), Verb.WAIT, Action.TERMINATE,
         Reason.TTL_EXPIRED, at(60), spot=Unknown("503")),
    # --- completion
    Case("completion waits for the delay", MANAGED, at(10), Verb.WAIT, Action.TERMINATE, Reason.COMPLETED,
         at(10.5), state=AgentState(completed_at=at(10))),
    Case("completion acts after the delay", {**MANAGED, "spawn:on-complete": "hibernate"}, at(11), Verb.ACT,
         Action.HIBERNATE, Reason.COMPLETED, at(10.5), state=AgentState(completed_at=at(10))),
    Case("ttl has priority over completion when both are due", {**TTL1H}, at(61), Verb.ACT, Action.TERMINATE,
         Reason.TTL_EXPIRED, at(60), state=AgentState(completed_at=at(30))),
    # --- idle
    Case("idle for the whole timeout: on-idle action", {**MANAGED, "spawn:idle-timeout": "30m",
         "spawn:on-idle": "stop"}, at(100), Verb.ACT, Action.STOP, Reason.IDLE, at(90),
         signals=QUIET, state=AgentState(idle_since=at(60))),
    Case("idle but not long enough: wait", {**MANAGED, "spawn:idle-timeout": "30m"}, at(80), Verb.WAIT,
         Action.TERMINATE, Reason.IDLE, at(90), signals=QUIET, state=AgentState(idle_since=at(60))),
    Case("busy window resets idle", {**MANAGED, "spawn:idle-timeout": "30m"}, at(100), Verb.NONE,
         signals=BUSY, state=AgentState(idle_since=at(60))),
    Case("a failed probe counts as active", {**MANAGED, "spawn:idle-timeout": "30m"}, at(100), Verb.NONE,
         signals=replace(QUIET, disk_bytes_per_sec=Unknown("/proc/diskstats missing")),
         state=AgentState(idle_since=at(60))),
    Case("a logged-in session counts as active", {**MANAGED, "spawn:idle-timeout": "30m"}, at(100), Verb.NONE,
         signals=replace(QUIET, sessions=1), state=AgentState(idle_since=at(60))),
    Case("boot grace: not idle during setup", {**MANAGED, "spawn:idle-timeout": "1m"}, at(100), Verb.NONE,
         signals=QUIET, uptime=120.0, state=AgentState(idle_since=at(60))),
    Case("uptime unknown: no idle action", {**MANAGED, "spawn:idle-timeout": "1m"}, at(100), Verb.NONE,
         signals=QUIET, uptime=Unknown("no /proc"), state=AgentState(idle_since=at(60))),
    Case("cpu threshold from the tag",
         {**MANAGED, "spawn:idle-timeout": "30m", "spawn:idle-cpu-percent": "90"},
         at(100), Verb.ACT, Action.TERMINATE, Reason.IDLE, at(90), signals=BUSY,
         state=AgentState(idle_since=at(60))),
    # --- idempotency and the backstop
    Case("already requested this boot: not again", TTL1H, at(61), Verb.NONE, Action.TERMINATE,
         Reason.TTL_EXPIRED, at(60), state=AgentState(done={"ttl-expired@2026-11-28T13:00:00Z": "x"})),
    Case("extended deadline is a new plan", {**MANAGED, "spawn:expires-at": "2026-11-28T13:30:00Z"}, at(91),
         Verb.ACT, Action.TERMINATE, Reason.TTL_EXPIRED, at(90),
         state=AgentState(done={"ttl-expired@2026-11-28T13:00:00Z": "x"})),
    Case("denied past backstop_after (on by default): power off", TTL1H, at(66), Verb.BACKSTOP,
         Action.TERMINATE, Reason.TTL_EXPIRED, at(60), state=failed("denied")),
    Case("denied but backstop turned off: keep trying", TTL1H, at(66), Verb.ACT, Action.TERMINATE,
         Reason.TTL_EXPIRED, at(60), config=replace(CFG, backstop=False), state=failed("denied")),
    Case("unreachable, not yet backstop_after: keep trying", TTL1H, at(61), Verb.ACT, Action.TERMINATE,
         Reason.TTL_EXPIRED, at(60), state=failed("unreachable")),
    Case("the delay counts from the first failure (an agent that started late still retries)",
         {**TTL1H, "spawn:on-complete": "stop"}, at(63), Verb.ACT, Action.STOP, Reason.TTL_EXPIRED, at(60),
         state=AgentState(failure=ActFailure(TTL_KEY, "denied", at(62), "denied"))),
    Case("the ladder covers stop", {**TTL1H, "spawn:on-complete": "stop"}, at(63), Verb.BACKSTOP,
         Action.STOP, Reason.TTL_EXPIRED, at(60), state=failed("denied")),
    Case("the ladder covers hibernate", {**TTL1H, "spawn:on-complete": "hibernate"}, at(63), Verb.BACKSTOP,
         Action.HIBERNATE, Reason.TTL_EXPIRED, at(60), state=failed("denied")),
    Case("an API that keeps failing (not denied) ends the same way", {**TTL1H, "spawn:on-complete": "stop"},
         at(63), Verb.BACKSTOP, Action.STOP, Reason.TTL_EXPIRED, at(60), state=failed("error")),
    Case("the ladder for an idle stop", {**MANAGED, "spawn:idle-timeout": "30m", "spawn:on-idle": "stop"},
         at(93), Verb.BACKSTOP, Action.STOP, Reason.IDLE, at(90), signals=QUIET,
         state=replace(failed("denied", key="idle@2026-11-28T13:30:00Z"), idle_since=at(60))),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decide(case: Case) -> None:
    decision = run(case)
    assert decision.verb is case.verb, decision.explanation
    if case.verb is not Verb.NONE or case.action is not None:
        assert decision.action == case.action
        assert decision.reason == case.reason
        assert decision.at == case.when


def test_warnings_at_10_5_1_minutes_each_once() -> None:
    state = AgentState()
    given: list[tuple[float, tuple[str, ...]]] = []
    for minute in (45, 49, 50, 51, 55, 56, 58, 59, 59.5):
        d = run(Case("", TTL1H, at(minute), Verb.WAIT, state=state))
        if d.warn:
            given.append((minute, d.warn))
            state = replace(state, warned=(*state.warned, *d.warn))
    assert [m for m, _ in given] == [50, 55, 59]
    assert given[0][1] == ("ttl-expired@2026-11-28T13:00:00Z/10m",)


def test_late_deadline_gives_one_warning_for_what_remains() -> None:
    d = run(Case("", {**MANAGED, "spawn:expires-at": "2026-11-28T12:03:00Z"}, at(0), Verb.WAIT))
    assert set(d.warn) == {"ttl-expired@2026-11-28T12:03:00Z/10m", "ttl-expired@2026-11-28T12:03:00Z/5m"}


def test_extend_rearms_warnings() -> None:
    state = AgentState(warned=("ttl-expired@2026-11-28T13:00:00Z/10m",))
    tags = {**MANAGED, "spawn:expires-at": "2026-11-28T14:00:00Z"}
    d = run(Case("", tags, at(112), Verb.WAIT, state=state))
    assert d.warn == ("ttl-expired@2026-11-28T14:00:00Z/10m",)


def test_pre_stop_hook_starts_within_its_timeout_before_the_action() -> None:
    cfg = replace(CFG, pre_stop_timeout=timedelta(minutes=2))
    early = run(Case("", TTL1H, at(57), Verb.WAIT, config=cfg))
    assert not early.hook
    due = run(Case("", TTL1H, at(58), Verb.WAIT, config=cfg))
    assert due.hook and due.hook_until == at(60)
    again = run(Case("", TTL1H, at(59), Verb.WAIT, config=cfg, state=AgentState(hooks=(due.key or "",))))
    assert not again.hook


def test_spot_hook_ends_before_the_notice_time() -> None:
    d = run(Case("", TTL1H, at(60), Verb.NOTICE, spot=SPOT))
    assert d.hook and d.hook_until is not None
    assert d.hook_until <= SPOT.time - timedelta(seconds=5)


def test_invalid_tag_is_reported() -> None:
    d = run(Case("", {**MANAGED, "spawn:ttl": "forever"}, at(1), Verb.NONE))
    assert any("spawn:ttl" in p and "forever" in p for p in d.problems)


def test_idle_since_starts_on_first_quiet_window_and_sticks() -> None:
    tags = {**MANAGED, "spawn:idle-timeout": "30m"}
    first = run(Case("", tags, at(70), Verb.WAIT, signals=QUIET))
    assert first.idle_since == at(70)
    later = run(Case("", tags, at(80), Verb.WAIT, signals=QUIET,
                     state=AgentState(idle_since=first.idle_since)))
    assert later.idle_since == at(70) and later.at == at(100)


def test_summary_line() -> None:
    d = run(Case("", {**TTL1H, "spawn:idle-timeout": "1h"}, at(40), Verb.WAIT, signals=QUIET,
                 state=AgentState(idle_since=at(28))))
    assert summary(d, at(40)) == "terminate at 13:00Z (ttl-expired), idle 12m/60m"


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError):
        run(Case("", TTL1H, datetime(2026, 11, 28, 12, 0), Verb.NONE))


@pytest.mark.parametrize("value", ["TRUE", "True", "true ", " true", "yes", "1"])
def test_a_managed_value_other_than_true_is_a_reported_problem(value: str) -> None:
    decision = run(Case("", {**TTL1H, "spawn:managed": value}, at(600), Verb.NONE))
    assert decision.verb is Verb.NONE and decision.policy.managed is False
    assert any("spawn:managed" in p and repr(value) in p for p in decision.problems)


def test_a_far_future_expires_at_is_a_reported_problem_naming_the_bound() -> None:
    decision = run(Case("", {**TTL1H, "spawn:expires-at": "3000-01-01T00:00:00Z"}, at(30), Verb.WAIT))
    assert decision.policy.deadline == at(60) and decision.policy.deadline_source == "launch time + spawn:ttl"
    assert any("spawn:expires-at" in p and "366 days" in p for p in decision.problems)
