"""The two safety layers the agent keeps beside its own EC2 call (docs/failsafe.md):

- the permission proof: a short-lived child (spored.permission_check) that DryRuns the lifecycle's
  end calls against the instance, at start and whenever the lifecycle's actions change;
- the OS failsafe's re-arm request (spored.failsafe): the time at which systemd powers the machine
  off if the agent is gone, kept in line with the deadline or the idle window.

Both only for a managed instance whose tags were read: unknown data changes nothing that was
requested before.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from spored import actions, failsafe, logs
from spored.config import Config
from spored.contract import format_timestamp
from spored.decide import Decision
from spored.observe import Identity, Unknown
from spored.permission_check import PermissionCheck

log = logs.get("spored.safety_layers")


class SafetyLayers:
    def __init__(self, runtime: Path) -> None:
        self.runtime = runtime
        self.permissions = PermissionCheck(runtime)
        self.failsafe = failsafe.Keeper()

    def keep(self, decision: Decision, identity: Identity | Unknown, now: datetime, config: Config, *,
             child_busy: bool) -> bool:
        """Reap a finished proof, start one when due (not while another child, ``child_busy``,
        runs: each loads boto3, and two at once slow a small instance down), and re-arm the
        failsafe when its time moved. True when a proof's result arrived."""
        monotonic = time.monotonic()
        arrived = self.permissions.reap(monotonic) is not None
        policy = decision.policy
        if isinstance(identity, Unknown) or policy.source != "tags":
            return arrived  # keep what was last requested: unknown data changes nothing
        if policy.managed and not child_busy:
            wanted = tuple(dict.fromkeys((policy.on_complete, policy.on_idle)))
            if self.permissions.due(wanted, monotonic):
                try:
                    self.permissions.start(identity.region, identity.instance_id, wanted, monotonic,
                                           config.ec2_endpoint)
                    log.info("permissions.check_started", actions=[str(a) for a in wanted])
                except OSError as exc:
                    log.error("permissions.check_failed", error=exc.strerror)
        if config.failsafe:
            self._rearm(decision, now, config)
        return arrived

    def _rearm(self, decision: Decision, now: datetime, config: Config) -> None:
        policy = decision.policy
        at = failsafe.failsafe_at(deadline=policy.deadline, idle_timeout=policy.idle_timeout, now=now,
                                  grace=config.failsafe_grace) if policy.managed else None
        sliding = policy.managed and policy.deadline is None and at is not None
        if not self.failsafe.due(at, sliding=sliding):
            return
        try:
            path = actions.request_failsafe(self.runtime, at)
        except OSError as exc:
            log.error("failsafe.request_failed", error=exc.strerror)
            return
        self.failsafe.written(at, sliding=sliding)
        log.info("failsafe.requested", at=format_timestamp(at) if at else None, path=str(path),
                 window="sliding" if sliding else ("deadline + grace" if at else "none (not managed)"))
