"""Spot interruption notices and rebalance recommendations, read on a Spot Instance only.

AWS sends both to Spot Instances only (spored.observe.needs_notice_poll cites the documents), so
the purchasing option is read first (``instance-life-cycle``, until it is known) and the poll runs
only where it is ``spot`` or not readable yet. The poll runs on its own thread; it keeps the last
readings and reports each notice it has not seen before, once (the seen keys are saved with the
agent's state, so a restart does not report an old notice again).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from spored import logs
from spored.contract import format_timestamp
from spored.imds_client import ImdsClient
from spored.observe import Notice, Unknown, needs_notice_poll, read_life_cycle, read_notice

log = logs.get("spored.notices")

Reading = Notice | Unknown | None


class NoticeWatch:
    def __init__(self, seen: Iterable[str]) -> None:
        self.life_cycle: str | Unknown = Unknown("not read yet")
        self._spot: Reading = None
        self._rebalance: Reading = None
        self._seen = set(seen)
        self._lock = threading.Lock()

    @property
    def wanted(self) -> bool:
        """The notices are polled here: a Spot Instance, or the purchasing option is unknown."""
        return needs_notice_poll(self.life_cycle)

    def read_life_cycle(self, imds: ImdsClient) -> None:
        if isinstance(self.life_cycle, Unknown):
            self.life_cycle = read_life_cycle(imds)
            if not isinstance(self.life_cycle, Unknown):
                log.info("life_cycle", value=self.life_cycle, notice_poll=self.wanted)

    def readings(self) -> tuple[Reading, Reading]:
        """The last spot and rebalance readings."""
        with self._lock:
            return self._spot, self._rebalance

    def poll(self, imds: ImdsClient) -> bool:
        """Read both notices (any thread); True when one appeared that was not seen before."""
        spot = read_notice(imds, "spot")
        rebalance = read_notice(imds, "rebalance")
        with self._lock:
            self._spot, self._rebalance = spot, rebalance
            fresh = [n for n in (spot, rebalance) if isinstance(n, Notice) and n.key not in self._seen]
            for notice in fresh:
                self._seen.add(notice.key)
        for notice in fresh:
            log.info("notice.seen", kind=notice.kind, action=notice.action,
                     time=format_timestamp(notice.time))
        return bool(fresh)
