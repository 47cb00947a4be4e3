"""The workload's completion marker: a file whose presence says "the work is done".

The marker counts only when its directory is not world-writable (any local user could end the
instance otherwise) and when it was written during this boot (a marker left on persistent storage
by an earlier boot is removed, never taken). The completion's time is the marker's, not when the
agent noticed it. The marker is removed only after the completion is in the saved state: if the
state cannot be written, the completion stays in memory and the marker on disk for the next start.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from spored import logs
from spored.contract import format_timestamp
from spored.probes import read_boot_time

log = logs.get("spored.completion")


class CompletionCheck:
    def __init__(self, proc_root: Path) -> None:
        self.proc_root = proc_root
        self.pending: Path | None = None  # a marker taken, to be removed once the state is saved
        self._refused = False
        self._stale_seen: set[tuple[str, float]] = set()

    def check(self, marker: Path, completed_at: datetime | None, now: datetime,
              delay: timedelta) -> tuple[datetime | None, str | None]:
        """Look at ``marker``. Returns the completion time (``completed_at`` when one is known
        already, else the marker's time, else None) and a problem to report (once), if any."""
        try:
            info = marker.stat()
            mode = marker.parent.stat().st_mode
        except OSError:
            return completed_at, None
        if mode & 0o002:
            if self._refused:
                return completed_at, None
            self._refused = True
            log.error("completion.refused", marker=str(marker),
                      why="its directory is world-writable: any local user could end the instance")
            return completed_at, f"completion marker refused: {marker.parent} is world-writable"
        boot = read_boot_time(self.proc_root)
        if isinstance(boot, float) and info.st_mtime < boot:
            self._stale(marker, info.st_mtime, boot)
            return completed_at, None
        if completed_at is None:
            # When the workload said so (the marker's time), not when the agent noticed.
            completed_at = min(datetime.fromtimestamp(info.st_mtime, UTC), now)
            log.info("completion.marker", marker=str(marker), written_at=format_timestamp(completed_at),
                     delay=str(delay))
        self.pending = marker
        return completed_at, None

    def consume(self) -> None:
        """The completion is saved: remove the marker taken."""
        marker, self.pending = self.pending, None
        if marker is None:
            return
        try:
            marker.unlink()
            log.info("completion.consumed", marker=str(marker))
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("completion.unconsumable", marker=str(marker), error=exc.strerror)

    def _stale(self, marker: Path, mtime: float, boot: float) -> None:
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
