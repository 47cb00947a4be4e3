"""The agent's time: the wall clock, held to the monotonic clock until a step is confirmed.

Every deadline is a wall-clock time, and the wall clock can step: an RTC that was wrong at boot,
``date -s``, a hypervisor resume, NTP stepping a large offset. A step forward of an hour with ten
minutes left would end the instance at once, skipping its warnings; a step backward would push
every timer (APScheduler's date and interval jobs run on wall time) out by the step.

So the agent keeps its own time: the wall time at an anchor plus the monotonic time elapsed since.
``check()`` compares it with the wall clock:

- within ``threshold`` (2 s): the steady state; the anchor follows the wall clock (NTP slewing);
- further apart: a **step**. The agent keeps the monotonic-anchored time and reports the step
  (``pending``) until a second source confirms the wall clock: the HTTP ``Date`` header of an
  instance metadata response (the metadata service sends one, like any HTTP server with a clock:
  RFC 9110 section 6.6.1; AWS's own IMDS mock, aws/amazon-ec2-metadata-mock, records it from real
  responses: ``Date: ... Server: EC2ws``). ``Date`` has one-second resolution; a reading counts as
  agreeing within ``tolerance`` (3 s). When the ``Date`` agrees with the stepped wall clock, the
  agent moves to it (``confirmed``); when it agrees with the agent's own time, the step is refuted
  and the agent stays on its time, reporting the wall clock as wrong.

The system's time-sync state (``timedatectl show -p NTPSynchronized``) is not used as the second
source: it says the clock discipline was synchronised at some point, not that the present reading
is right (a ``date -s`` right after a sync still shows "yes").

Test hook: ``SPORED_TEST_CLOCK_OFFSET_FILE`` names a file holding a number of seconds added to the
wall clock the agent reads (a stepped RTC, for tests; read only when the variable is set).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

TEST_OFFSET_ENV = "SPORED_TEST_CLOCK_OFFSET_FILE"
THRESHOLD = 2.0
TOLERANCE = 3.0


def _test_offset(path: Path) -> float:
    try:
        return float(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0.0


def system_wall() -> Callable[[], float]:
    """``time.time``, or ``time.time`` plus the test offset when the test hook is set."""
    hook = os.environ.get(TEST_OFFSET_ENV)
    if not hook:
        return time.time
    path = Path(hook)
    return lambda: time.time() + _test_offset(path)


@dataclass(frozen=True)
class Reference:
    """A second source's reading of the time: ``epoch`` as seen at ``monotonic``."""

    epoch: float
    monotonic: float
    source: str


def reference_from_date(header: str | None, received: float, source: str) -> Reference | None:
    """An HTTP ``Date`` header (IMF-fixdate) received at monotonic time ``received``."""
    if not header:
        return None
    try:
        moment = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    # Date truncates to the second: its reading is on average half a second behind.
    return Reference(moment.timestamp() + 0.5, received, source)


@dataclass(frozen=True)
class Change:
    """What ``check`` found: ``kind`` is step | confirmed | refuted | settled."""

    kind: str
    step: float           # wall clock minus the agent's time, in seconds
    source: str = ""


class Clock:
    def __init__(self, *, wall: Callable[[], float] | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 threshold: float = THRESHOLD, tolerance: float = TOLERANCE) -> None:
        self._wall = wall or system_wall()
        self._mono = monotonic
        self.threshold = threshold
        self.tolerance = tolerance
        self._lock = threading.Lock()
        self._anchor_wall = self._wall()
        self._anchor_mono = self._mono()
        self.pending: float | None = None  # an unconfirmed step (wall - own time), seconds
        self.refuted: float | None = None  # a step the second source said is wrong

    def time(self) -> float:
        """The agent's time, seconds since the epoch."""
        with self._lock:
            return self._anchor_wall + (self._mono() - self._anchor_mono)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def skew(self) -> float:
        """Wall clock minus the agent's time, in seconds (0 in the steady state)."""
        with self._lock:
            return self._wall() - (self._anchor_wall + (self._mono() - self._anchor_mono))

    def check(self, reference: Reference | None = None) -> Change | None:
        """Compare the wall clock with the agent's time (and ``reference`` when a step is pending)."""
        with self._lock:
            wall, mono = self._wall(), self._mono()
            own = self._anchor_wall + (mono - self._anchor_mono)
            step = wall - own
            if abs(step) < self.threshold:
                self._anchor_wall, self._anchor_mono = wall, mono
                settled = self.pending is not None or self.refuted is not None
                self.pending = self.refuted = None
                return Change("settled", step) if settled else None
            change: Change | None = None
            new_step = self.pending is None or abs(step - self.pending) >= self.threshold
            if new_step and (self.refuted is None or abs(step - self.refuted) >= self.threshold):
                self.pending, self.refuted = step, None
                change = Change("step", step)
            if self.pending is None or reference is None:
                return change
            seen = reference.epoch + (mono - reference.monotonic)
            if abs(seen - wall) <= self.tolerance:
                self._anchor_wall, self._anchor_mono = wall, mono
                self.pending = None
                return Change("confirmed", step, reference.source)
            if abs(seen - own) <= self.tolerance:
                self.pending, self.refuted = None, step
                return Change("refuted", step, reference.source)
            return change
