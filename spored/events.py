"""The main loop's events: most urgent first, and an event already pending is not queued twice.

Producers are the timers (spored.timers), the notice poll, the clock watch and the signal handlers;
the one consumer is the agent's main thread (spored.daemon), which alone changes state.
"""

from __future__ import annotations

import queue
import signal
import socket
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Any

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

    def get(self, timeout: float | None = None) -> str:
        """The next event, waiting for it (no periodic wake-up: an idle agent costs nothing here);
        ``queue.Empty`` after ``timeout`` seconds without one, when given."""
        _prio, _seq, event = self._queue.get(timeout=timeout)
        with self._lock:
            self._pending.discard(event)
        return event


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """The Python-level handler: nothing. The signal's number reaches the relay thread through the
    wake-up socket (``signal.set_wakeup_fd``)."""


class SignalRelay:
    """Signals as events, without a lock taken inside a signal handler.

    A Python signal handler runs on the main thread between two bytecodes, possibly while that
    thread holds the queue's lock; a handler that queued the event itself could deadlock there.
    Instead the interpreter's C-level handler writes the signal number to a socket
    (``signal.set_wakeup_fd``), and a thread blocked on that socket queues the event. Nothing
    wakes periodically. ``install`` and ``restore`` run on the main thread."""

    def __init__(self, events: EventQueue, names: Mapping[signal.Signals, str]) -> None:
        self._events = events
        self._names = {int(sig): name for sig, name in names.items()}
        self._previous: dict[int, Any] = {}
        self._old_fd = -1
        self._pair: tuple[socket.socket, socket.socket] | None = None

    def install(self) -> None:
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        self._pair = (reader, writer)
        self._old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        for number in self._names:
            self._previous[number] = signal.signal(number, _ignore)
        threading.Thread(target=self._relay, args=(reader,), name="signal-relay", daemon=True).start()

    def _relay(self, reader: socket.socket) -> None:
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for number in data:
                name = self._names.get(number)
                if name is not None:
                    self._events.put(name)

    def restore(self) -> None:
        """The handlers and wake-up descriptor from before ``install``."""
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}
        signal.set_wakeup_fd(self._old_fd)
        if self._pair is not None:
            for sock in self._pair:
                sock.close()
            self._pair = None
