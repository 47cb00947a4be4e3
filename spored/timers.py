"""When the agent's main loop hears of things. Every timer here only puts an event on the queue
(spored.events); the main thread alone acts on it.

- ``tick`` every ``config.tick`` and ``tags`` every ``config.tag_refresh`` (``tag_refresh_api``
  when tags come from DescribeTags, with jitter): APScheduler 3.x jobs (a BackgroundScheduler);
- ``deferred``: a one-off ``due`` a few seconds from now (an action deferred by a metadata hiccup);
- ``due`` at the exact time of the next planned action and ``prepare`` ``PREPARE_LEAD`` before it:
  ``threading.Timer``s, which wait on the monotonic clock, so a step of the wall clock moves
  neither (spored.clock);
- the ``notice-poll`` thread (only on a Spot Instance; spored.observe.needs_notice_poll) and the
  ``clock-watch`` thread: ``Event.wait`` loops, monotonic too, that call back into the agent.

APScheduler plans its jobs on the wall clock: after a step of the wall clock the agent calls
``restart`` and every job is planned again (a backward step would stall the tick otherwise).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from spored import logs
from spored.events import EventQueue

# The early look at the tags this long before a planned action (spored.daemon).
PREPARE_LEAD = timedelta(seconds=2)

log = logs.get("spored.timers")


def _loop(stop: threading.Event, interval: float, call: Callable[[], None], failure: str) -> None:
    """``call`` every ``interval`` seconds on the monotonic clock until ``stop``; an exception is
    logged as ``failure`` and never ends the loop."""
    while not stop.wait(interval):
        try:
            call()
        except Exception:  # never end the thread; the error is in the log
            log.exception(failure)


class Timers:
    def __init__(self, events: EventQueue, *, poll_notices: Callable[[], None],
                 check_clock: Callable[[], None]) -> None:
        self._events = events
        self._poll_notices = poll_notices
        self._check_clock = check_clock
        self._scheduler: Any = None
        self._poll_stop = threading.Event()
        self._clock_stop = threading.Event()
        self._polling = False
        self._due_at: datetime | None = None
        self._due_timers: list[threading.Timer] = []

    @property
    def running(self) -> bool:
        return self._scheduler is not None

    @property
    def polling(self) -> bool:
        """The notice poll is running."""
        return self._polling

    # ---------------------------------------------------------------- start and stop
    def start(self, *, tick: float, tags: float, clock_check: float, notice_poll: float | None) -> None:
        """The scheduler's jobs, the clock watch and (``notice_poll`` seconds, when not None) the
        notice poll."""
        from apscheduler.executors.debug import DebugExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        # Every job only puts an event on the queue (never blocks), so it runs on the scheduler's
        # own thread (APScheduler's DebugExecutor: "executes the target callable directly instead
        # of deferring it to a thread") rather than waking a pool thread for it.
        sched = BackgroundScheduler(timezone=UTC, executors={"default": DebugExecutor()},
                                    job_defaults={"coalesce": True, "max_instances": 1,
                                                  "misfire_grace_time": None})
        sched.add_job(self._events.put, "interval", args=["tick"], id="tick", seconds=tick)
        self._scheduler = sched
        self.set_tag_interval(tags)
        sched.start()
        self._clock_stop = threading.Event()
        threading.Thread(target=_loop, args=(self._clock_stop, clock_check, self._check_clock,
                                             "clock.check_failed"),
                         name="clock-watch", daemon=True).start()
        self.set_notice_poll(notice_poll)

    def stop(self) -> None:
        self.set_notice_poll(None)
        self._clock_stop.set()
        self._cancel_due()
        self._due_at = None
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    def restart(self, *, tick: float, tags: float, clock_check: float, notice_poll: float | None) -> None:
        self.stop()
        self.start(tick=tick, tags=tags, clock_check=clock_check, notice_poll=notice_poll)

    # ---------------------------------------------------------------- the parts
    def set_tag_interval(self, seconds: float) -> None:
        """Tags every ``seconds`` (with 10 % jitter); nothing when that is already the plan."""
        if self._scheduler is None:
            return
        job = self._scheduler.get_job("tags")
        if job is None or getattr(job.trigger, "interval", None) != timedelta(seconds=seconds):
            self._scheduler.add_job(self._events.put, "interval", args=["tags"], id="tags",
                                    seconds=seconds, jitter=max(1, int(seconds * 0.1)),
                                    replace_existing=True)

    def set_notice_poll(self, interval: float | None) -> None:
        """Run the notice poll every ``interval`` seconds, or stop it (None)."""
        if interval is None:
            self._poll_stop.set()
            self._polling = False
        elif not self._polling and self._scheduler is not None:
            self._poll_stop = threading.Event()
            threading.Thread(target=_loop, args=(self._poll_stop, interval, self._poll_notices,
                                                 "notice.poll_failed"),
                             name="notice-poll", daemon=True).start()
            self._polling = True

    def defer(self, seconds: float) -> None:
        """One ``due`` event ``seconds`` from now (APScheduler plans on the system's wall clock)."""
        if self._scheduler is not None:
            self._scheduler.add_job(self._events.put, "date", args=["due"], id="deferred",
                                    run_date=datetime.now(UTC) + timedelta(seconds=seconds),
                                    replace_existing=True, misfire_grace_time=None)

    def schedule_due(self, at: datetime | None, now: datetime) -> None:
        """A timer at the exact time of the next action (``at``, in the agent's time ``now``) and
        one ``PREPARE_LEAD`` before it; None cancels both."""
        if self._scheduler is None or at == self._due_at:
            return
        self._due_at = at
        self._cancel_due()
        left = (at - now).total_seconds() if at is not None else 0.0
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
