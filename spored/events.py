"""The main loop's events: most urgent first, and an event already pending is not queued twice.

Producers are the timers (spored.timers), the notice poll, the clock watch and the signal handlers;
the one consumer is the agent's main thread (spored.daemon), which alone changes state.
"""

from __future__ import annotations

import queue
import threading

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
        """The next event; ``queue.Empty`` after ``timeout`` seconds without one."""
        _prio, _seq, event = self._queue.get(timeout=timeout)
        with self._lock:
            self._pending.discard(event)
        return event
