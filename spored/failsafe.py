"""The OS-level failsafe and the fallback ladder: what both programs agree on. Pure.

Three layers end an instance, each on its own channel (docs/failsafe.md):

1. the agent's EC2 call (TerminateInstances / StopInstances) at the planned time;
2. the fallback ladder: when that call is denied or keeps failing for ``backstop_after``, the
   agent requests an OS power-off (``/run/spored/poweroff``, carried out by systemd);
3. the failsafe, which needs no agent: the user-data's first command arms a transient systemd
   timer, ``spawn-failsafe.timer``, that powers the machine off at ``failsafe_at``. A healthy
   agent keeps it in line with the tags through a request file (``/run/spored/failsafe``) that a
   root-side path unit (``spored-failsafe.path``) turns into a new timer.

In every case the instance's ``InstanceInitiatedShutdownBehavior`` makes the power-off mean the
lifecycle's action. EC2 offers only ``stop`` and ``terminate`` for it
(https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/terminating-instances.html#Using_ChangingInstanceInitiatedShutdownBehavior),
so a hibernate lifecycle powers off as a stop and loses its RAM state.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from spored.contract import Action

# InstanceInitiatedShutdownBehavior per lifecycle action.
SHUTDOWN_BEHAVIOUR: dict[Action, str] = {Action.TERMINATE: "terminate", Action.STOP: "stop",
                                         Action.HIBERNATE: "stop"}

# How long after the deadline the failsafe fires: room for the warnings' last minute, the
# pre-stop hook, the EC2 call and the fallback ladder (2 minutes) before the OS acts alone.
DEFAULT_GRACE = timedelta(minutes=30)
# The transient units the user-data creates (systemd-run --unit=spawn-failsafe).
TIMER_UNIT = "spawn-failsafe.timer"
SERVICE_UNIT = "spawn-failsafe.service"
# The agent's re-arm request, in its runtime directory: one line, "<epoch seconds>" or "none".
REQUEST_FILE = "failsafe"
# A failsafe is never armed closer than this to now (a past deadline powers off in a minute).
MIN_DELAY = timedelta(seconds=60)


def shutdown_behaviour(action: Action) -> str:
    return SHUTDOWN_BEHAVIOUR[action]


def failsafe_at(*, deadline: datetime | None, idle_timeout: timedelta | None, now: datetime,
                grace: timedelta = DEFAULT_GRACE) -> datetime | None:
    """When the OS powers off if nothing else ended the instance; None: no failsafe.

    - a deadline (TTL or ``spawn:expires-at``): the deadline plus ``grace``;
    - no deadline but an idle timeout: the "must be managed by" window, ``now`` + idle timeout +
      ``grace`` (a healthy agent moves it forward; one that stops doing so is not managing);
    - neither (``--no-timeout``): none.
    """
    if deadline is not None:
        return deadline + grace
    if idle_timeout is not None:
        return now + idle_timeout + grace
    return None


def request_text(at: datetime | None) -> str:
    """The request file's content: the epoch second to power off at, or ``none``."""
    return "none\n" if at is None else f"{int(at.timestamp())}\n"


def epoch_for_user_data(at: datetime) -> int:
    """The integer the user-data renders (no other value of the launch reaches its shell)."""
    if at.tzinfo is None:
        raise ValueError("naive datetimes are not failsafe times")
    return int(at.timestamp())


# The agent re-requests a sliding ("must be managed by") failsafe this often, not on every tick.
SLIDE_EVERY = timedelta(minutes=5)


class Keeper:
    """When the agent writes a new failsafe request: once at start, whenever the time it should
    be changes (``spawn extend``, a new TTL, ``spawn:managed`` removed -> ``none``), and for a
    sliding window every ``SLIDE_EVERY``. No I/O: the caller writes ``request_text(at)``."""

    def __init__(self) -> None:
        self.requested: datetime | None = None
        self._written = False
        self._sliding = False

    def due(self, at: datetime | None, *, sliding: bool) -> bool:
        if not self._written or sliding != self._sliding or (at is None) != (self.requested is None):
            return True
        if at is None or self.requested is None:
            return False
        if sliding:
            return at - self.requested >= SLIDE_EVERY or at < self.requested
        return at != self.requested

    def written(self, at: datetime | None, *, sliding: bool) -> None:
        self.requested, self._written, self._sliding = at, True, sliding
