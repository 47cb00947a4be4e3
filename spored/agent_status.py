"""The agent's health, published as the tag ``spawn:agent-status`` = ``<state> <UTC timestamp>``.

States (the timestamp is when the agent entered the state):

- ``ready``: observing; nothing planned, or a planned action not yet within its warnings;
- ``warning``: a warning was given for the planned action, or AWS shows a spot interruption or
  rebalance notice for this instance;
- ``acting``: the planned action is due or was requested and the agent waits for AWS, or an OS
  power-off was requested (backstop);
- ``degraded``: the tags cannot be read (last good tags or the config fallback are in force), or
  the last attempt at the due action failed.

The tag is written only when the state changes, only on the agent's own instance (the identity
document's instance id), only when it is managed, and never in dry-run. The write runs in a
short-lived child process (``python -m spored.agent_status``) so that boto3 (~30 MiB) is never
loaded into the long-running daemon; the daemon never waits for it, kills it after
``WRITE_TIMEOUT`` and, after a failure, tries again no sooner than the back-off allows.
"""

from __future__ import annotations

import argparse
import enum
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from spored.backoff import next_delay
from spored.contract import TAG_AGENT_STATUS, format_timestamp, parse_timestamp
from spored.decide import Decision, Observations, Verb
from spored.errors import ValidationError
from spored.observe import Notice, Unknown

# The child is killed after this long (botocore: 3 s connect, 5 s read, 3 attempts ~ 30 s worst).
WRITE_TIMEOUT = 60.0
# After a failed write: wait RETRY_MIN seconds, doubling up to RETRY_MAX, before the next attempt.
RETRY_MIN = 60.0
RETRY_MAX = 3600.0
# EC2 tag values are at most 256 characters.
MAX_TAG_VALUE = 256


class AgentStatus(enum.StrEnum):
    READY = "ready"
    WARNING = "warning"
    ACTING = "acting"
    DEGRADED = "degraded"


def derive(decision: Decision, obs: Observations, *, warned: bool, failing: bool) -> AgentStatus:
    """The state from what the daemon knows: its decision, observations, a warning in force
    (``warned``) and a failed attempt at the due action (``failing``). Pure."""
    if isinstance(obs.tags, Unknown) or failing:
        return AgentStatus.DEGRADED
    if decision.verb in (Verb.ACT, Verb.BACKSTOP) or (decision.verb is Verb.NONE
                                                       and decision.action is not None):
        return AgentStatus.ACTING
    notices = any(isinstance(n, Notice) for n in (obs.spot, obs.rebalance))
    if decision.verb is Verb.NOTICE or notices or warned:
        return AgentStatus.WARNING
    return AgentStatus.READY


def tag_value(status: AgentStatus, since: datetime, detail: str = "") -> str:
    """``<state> <UTC timestamp>``, then `` <detail>`` when there is one (``permissions denied:
    ec2:TerminateInstances``, from spored.permission_proof)."""
    value = f"{status} {format_timestamp(since)}"
    return f"{value} {detail}"[:MAX_TAG_VALUE] if detail else value


@dataclass
class StatusTracker:
    """Change detection and back-off for the status tag; no I/O, time passed in (monotonic)."""

    current: AgentStatus | None = None
    since: datetime | None = None
    detail: str = ""
    published: str | None = None  # the value last written successfully
    writing: str | None = None    # the value being written now
    retry_at: float = 0.0
    backoff: float = 0.0

    def observe(self, status: AgentStatus, now: datetime, detail: str = "") -> None:
        if status != self.current:
            self.current, self.since = status, now
        self.detail = detail

    def due(self, monotonic: float) -> str | None:
        """The value to write now, or None (unchanged, a write in flight, or backing off)."""
        if self.current is None or self.since is None or self.writing is not None:
            return None
        value = tag_value(self.current, self.since, self.detail)
        if value == self.published or monotonic < self.retry_at:
            return None
        return value

    def started(self, value: str) -> None:
        self.writing = value

    def finished(self, ok: bool, monotonic: float) -> None:
        if ok:
            self.published, self.backoff, self.retry_at = self.writing, 0.0, 0.0
        else:
            self.backoff = next_delay(self.backoff, RETRY_MIN, RETRY_MAX)
            self.retry_at = monotonic + self.backoff
        self.writing = None


def spawn_writer(region: str, instance_id: str, value: str, endpoint: str = "") -> subprocess.Popen[bytes]:
    """Start the child that writes the tag; its JSON log lines go to the daemon's stdout."""
    argv = [sys.executable, "-m", "spored.agent_status", "--region", region,
            "--instance-id", instance_id, "--value", value]
    if endpoint:
        argv += ["--endpoint", endpoint]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, close_fds=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m spored.agent_status``: CreateTags spawn:agent-status on one instance; 0 or 1."""
    from spored import logs
    from spored.ec2 import Ec2, Ec2CallError

    parser = argparse.ArgumentParser(prog="python -m spored.agent_status")
    parser.add_argument("--region", required=True)
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--value", required=True, help="'<state> <UTC timestamp>[ <detail>]'")
    parser.add_argument("--endpoint", default="")
    args = parser.parse_args(argv)
    state, _, rest = args.value.partition(" ")
    stamp = rest.split(" ", 1)[0]
    if state not in set(AgentStatus):
        parser.error(f"--value: {state!r} is not a state; accepted: {', '.join(AgentStatus)}")
    try:
        parse_timestamp(stamp, field="--value")
    except ValidationError as exc:
        parser.error(exc.message)
    logs.configure(json=True, stream=sys.stdout)
    log = logs.get("spored.agent_status")
    try:
        Ec2(args.region, args.endpoint).create_tags(args.instance_id, {TAG_AGENT_STATUS: args.value})
    except Ec2CallError as exc:
        log.error("status_tag.failed", code=exc.code, kind=exc.kind, instance_id=args.instance_id)
        return 1
    log.info("status_tag.written", value=args.value, instance_id=args.instance_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
