"""spawn:agent-status: the state from real decisions (decide() is pure), and when the tag is written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spored.agent_status import RETRY_MIN, AgentStatus, StatusTracker, derive, main, tag_value
from spored.config import Config
from spored.decide import Observations, decide
from spored.observe import Identity, Notice, Unknown
from spored.probes import Signals
from spored.state import ActFailure, AgentState

LAUNCH = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
ID = Identity(instance_id="i-0123456789abcdef0", region="us-east-1", account_id="123456789012",
              instance_type="t3.micro", launch_time=LAUNCH)
BUSY = Signals(cpu_percent=80.0, net_bytes_per_sec=0.0, disk_bytes_per_sec=0.0, sessions=0, gpu_percent=None)
TTL = {"spawn:managed": "true", "spawn:ttl": "1h"}
TTL_KEY = "ttl-expired@2026-11-28T13:00:00Z"
SPOT = Notice(kind="spot", action="terminate", time=LAUNCH + timedelta(minutes=32), key="spot-abc")


def status(tags: dict[str, str] | Unknown, minutes: float, *, state: AgentState | None = None,
           spot: Notice | None = None, warned: bool = False) -> AgentStatus:
    state = state or AgentState()
    obs = Observations(identity=ID, tags=tags, spot=spot, rebalance=None, signals=BUSY, uptime=3600.0)
    decision = decide(state, obs, LAUNCH + timedelta(minutes=minutes), Config())
    failing = state.failure is not None and state.failure.key == decision.key
    return derive(decision, obs, warned=warned, failing=failing)


@pytest.mark.parametrize(("name", "kwargs", "minutes", "expected"), [
    ("nothing planned", {"tags": {"spawn:managed": "true"}}, 30, AgentStatus.READY),
    ("deadline far away", {"tags": TTL}, 30, AgentStatus.READY),
    ("warning given for the deadline", {"tags": TTL, "warned": True}, 55, AgentStatus.WARNING),
    ("spot notice shown by AWS", {"tags": TTL, "spot": SPOT}, 30, AgentStatus.WARNING),
    ("spot notice already handled, still shown",
     {"tags": TTL, "spot": SPOT, "state": AgentState(notices=("spot-abc",))}, 31, AgentStatus.WARNING),
    ("deadline due", {"tags": TTL}, 60, AgentStatus.ACTING),
    ("action requested, waiting for AWS",
     {"tags": TTL, "state": AgentState(done={TTL_KEY: "2026-11-28T13:00:00Z"})}, 61, AgentStatus.ACTING),
    ("the due action failed",
     {"tags": TTL, "state": AgentState(failure=ActFailure(TTL_KEY, "denied", LAUNCH, "denied"))}, 61,
     AgentStatus.DEGRADED),
    ("tags unreadable", {"tags": Unknown("DescribeTags: Throttling")}, 30, AgentStatus.DEGRADED),
])
def test_state_from_what_the_agent_knows(name: str, kwargs: dict[str, object], minutes: float,
                                         expected: AgentStatus) -> None:
    assert status(minutes=minutes, **kwargs) is expected, name  # type: ignore[arg-type]


def test_written_once_per_change_with_the_time_the_state_began() -> None:
    t = StatusTracker()
    assert t.due(0.0) is None  # nothing observed yet
    t.observe(AgentStatus.READY, LAUNCH)
    value = t.due(0.0)
    assert value == "ready 2026-11-28T12:00:00Z"
    t.started(value)
    assert t.due(1.0) is None  # a write is in flight: never a second child
    t.finished(True, 2.0)
    t.observe(AgentStatus.READY, LAUNCH + timedelta(minutes=5))
    assert t.due(3.0) is None  # unchanged: no write
    t.observe(AgentStatus.WARNING, LAUNCH + timedelta(minutes=55))
    assert t.due(4.0) == "warning 2026-11-28T12:55:00Z"


def test_a_failed_write_backs_off_instead_of_retrying_at_once() -> None:
    t = StatusTracker()
    t.observe(AgentStatus.READY, LAUNCH)
    value = t.due(100.0)
    assert value is not None
    t.started(value)
    t.finished(False, 100.0)
    assert t.due(101.0) is None
    assert t.due(100.0 + RETRY_MIN) == value
    t.started(value)
    t.finished(False, 200.0)
    assert t.due(200.0 + RETRY_MIN) is None  # doubled
    assert t.due(200.0 + 2 * RETRY_MIN) == value


def test_tag_value_is_parseable_by_the_writer_and_bad_values_are_refused(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert tag_value(AgentStatus.ACTING, LAUNCH) == "acting 2026-11-28T12:00:00Z"
    for bad in ("sleepy 2026-11-28T12:00:00Z", "ready yesterday"):
        with pytest.raises(SystemExit) as exc:
            main(["--region", "us-east-1", "--instance-id", "i-1", "--value", bad])
        assert exc.value.code == 2
        assert "--value" in capsys.readouterr().err
