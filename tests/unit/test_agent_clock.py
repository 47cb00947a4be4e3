"""The agent's clock: wall time held to the monotonic clock until a step is confirmed (injected time)."""

from __future__ import annotations

from email.utils import formatdate

from spored.clock import Clock, Reference, reference_from_date


class Times:
    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def clock(t: Times) -> Clock:
    return Clock(wall=lambda: t.wall, monotonic=lambda: t.mono)


def test_steady_state_follows_the_wall_clock_and_its_slewing() -> None:
    t = Times()
    c = clock(t)
    t.advance(10)
    t.wall += 0.5  # NTP slewing: small
    assert c.check() is None
    assert c.time() == t.wall and c.skew() == 0


def test_a_forward_step_is_held_until_confirmed() -> None:
    t = Times()
    c = clock(t)
    t.wall += 3600
    change = c.check()
    assert change is not None and change.kind == "step" and round(change.step) == 3600
    assert c.time() == t.mono - 1000 + 1_800_000_000.0  # still the monotonic-anchored time
    assert round(c.skew()) == 3600
    assert c.check() is None  # reported once
    date = Reference(t.wall, t.mono, "Date")
    confirmed = c.check(date)
    assert confirmed is not None and confirmed.kind == "confirmed"
    assert c.time() == t.wall and c.pending is None


def test_a_step_the_second_source_contradicts_is_refuted_and_the_agent_keeps_its_time() -> None:
    t = Times()
    c = clock(t)
    t.wall += 3600
    c.check()
    own = c.time()
    refuted = c.check(Reference(own, t.mono, "Date"))
    assert refuted is not None and refuted.kind == "refuted"
    t.advance(5)
    assert c.check(Reference(own + 5, t.mono, "Date")) is None
    assert c.time() == own + 5 and c.refuted is not None


def test_a_backward_step_is_held_too_and_settles_when_the_wall_clock_comes_back() -> None:
    t = Times()
    c = clock(t)
    t.wall -= 3600
    step = c.check()
    assert step is not None and step.kind == "step" and step.step < 0
    t.wall += 3600
    settled = c.check()
    assert settled is not None and settled.kind == "settled" and c.pending is None


def test_a_date_header_is_a_reference() -> None:
    ref = reference_from_date(formatdate(1_800_000_000, usegmt=True), 5.0, "metadata")
    assert ref is not None and 1_800_000_000 <= ref.epoch <= 1_800_000_001 and ref.monotonic == 5.0
    assert reference_from_date("not a date", 5.0, "metadata") is None
    assert reference_from_date(None, 5.0, "metadata") is None
