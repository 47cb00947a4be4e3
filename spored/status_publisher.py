"""Publishes the agent's health as the tag ``spawn:agent-status`` (spored.agent_status).

The write runs in a short-lived child so boto3 never loads into the daemon. One child at a time;
the daemon never waits for it: each evaluation first reaps a finished child (or kills one older
than ``WRITE_TIMEOUT``), then starts a new one only when the value changed and the back-off after
a failed write allows it. Only on the agent's own instance, only when it is managed, never in
dry-run (then the value is only logged).
"""

from __future__ import annotations

import subprocess
import time
from datetime import datetime

from spored import logs
from spored.agent_status import WRITE_TIMEOUT, AgentStatus, StatusTracker, spawn_writer
from spored.observe import Identity, Unknown

log = logs.get("spored.status_publisher")


class StatusPublisher:
    def __init__(self) -> None:
        self._tracker = StatusTracker()
        self._writer: subprocess.Popen[bytes] | None = None
        self._writer_at = 0.0

    @property
    def busy(self) -> bool:
        """A write is in flight (a child is running)."""
        return self._writer is not None

    def publish(self, status: AgentStatus, now: datetime, *, detail: str, identity: Identity | Unknown,
                managed: bool, dry_run: bool, endpoint: str) -> None:
        """Note ``status`` (entered at ``now`` if it is new) and write it when it is due."""
        self.reap()
        self._tracker.observe(status, now, detail=detail)
        if isinstance(identity, Unknown) or not managed:
            return  # never on an instance that is not ours to manage
        value = self._tracker.due(time.monotonic())
        if value is None:
            return
        if dry_run:
            log.info("status_tag.dry_run", value=value, instance_id=identity.instance_id)
            self._tracker.started(value)
            self._tracker.finished(True, time.monotonic())
            return
        log.info("status_tag.write", value=value, instance_id=identity.instance_id)
        self._tracker.started(value)
        try:
            self._writer = spawn_writer(identity.region, identity.instance_id, value, endpoint)
            self._writer_at = time.monotonic()
        except OSError as exc:
            log.error("status_tag.failed", error=exc.strerror)
            self._tracker.finished(False, time.monotonic())

    def reap(self) -> None:
        """Collect a finished child; kill one that ran longer than ``WRITE_TIMEOUT``."""
        proc = self._writer
        if proc is None:
            return
        code = proc.poll()
        if code is None:
            if time.monotonic() - self._writer_at < WRITE_TIMEOUT:
                return
            proc.kill()
            code = proc.wait()
            log.error("status_tag.timeout", seconds=WRITE_TIMEOUT)
        elif code != 0:
            log.error("status_tag.failed", exit_code=code)
        self._writer = None
        self._tracker.finished(code == 0, time.monotonic())
