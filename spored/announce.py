"""What the agent tells people and the workload before it acts.

- A warning before a planned action (the decision's ``warn`` steps): the ``warning`` log event,
  the warning file in the runtime directory (which the workload and ``spored status`` read) and,
  with ``wall`` on, a message on every terminal. When the warned action is no longer planned (the
  deadline was extended), the file is withdrawn.
- A spot interruption notice or rebalance recommendation: the same three channels, with AWS's own
  time and action.
- The pre-stop hook (``pre_stop_hook``), started once per planned action, with time to run until
  ``hook_until``.

Each function returns the agent's state with what was announced recorded in it (so a restart
announces nothing twice).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path

from spored import actions, logs
from spored.config import Config
from spored.contract import Reason, format_timestamp
from spored.decide import Decision, Verb
from spored.state import AgentState

log = logs.get("spored.announce")


class Announcer:
    def __init__(self, runtime: Path) -> None:
        self.runtime = runtime
        self.warning_key: str | None = None  # the planned action a warning file is in force for
        self.hooks: list[actions.HookRun] = []

    def withdraw_if_moved(self, decision: Decision, state: AgentState) -> None:
        """Remove the warning file when the warned action is no longer planned (extended)."""
        if self.warning_key is not None and decision.key != self.warning_key \
                and decision.verb in (Verb.WAIT, Verb.NONE) and decision.key not in state.done:
            actions.clear_warning(self.runtime)
            self.warning_key = None

    def prepare(self, decision: Decision, state: AgentState, config: Config) -> AgentState:
        """The warnings and the pre-stop hook that are due for a planned action."""
        if decision.at is None or decision.key is None or decision.reason is None:
            return state
        if decision.warn:
            self._warn(decision, f"this instance will {decision.explanation}", config)
            state = replace(state, warned=(*state.warned, *decision.warn))
        if decision.hook and decision.hook_until is not None:
            state = self._start_hook(state, config, key=decision.key, reason=decision.reason,
                                     action=str(decision.action), until=decision.hook_until)
        return state

    def notice(self, decision: Decision, state: AgentState, config: Config) -> AgentState:
        """A spot interruption notice or a rebalance recommendation, announced once."""
        if decision.key is None or decision.reason is None or decision.at is None:
            return state
        state = replace(state, notices=(*state.notices, decision.key))
        spot = decision.reason is Reason.SPOT_INTERRUPTION
        # The notice's own action: terminate, stop or hibernate; "none" for a rebalance
        # recommendation (nothing is ended); "unknown" for a spot payload naming anything else.
        action = str(decision.action) if decision.action else ("unknown" if spot else "none")
        message = (f"AWS will {action if decision.action else 'reclaim'} this spot instance at "
                   f"{format_timestamp(decision.at)}" if spot
                   else "AWS recommends rebalancing: this spot instance is at elevated risk of interruption")
        log.warning("notice", reason=str(decision.reason), action=action, at=format_timestamp(decision.at))
        try:  # before the hook starts: the hook may read it
            actions.write_warning(self.runtime, action=action, reason=decision.reason,
                                  at=decision.at, message=message)
        except OSError as exc:
            log.error("warning.file_failed", error=exc.strerror)
        if decision.hook and decision.hook_until is not None:
            state = self._start_hook(state, config, key=decision.key, reason=decision.reason,
                                     action=action, until=decision.hook_until)
        if config.wall:
            actions.wall(f"spored: {message}")
        return state

    def prune(self) -> None:
        """Forget the hooks that have ended."""
        self.hooks = [h for h in self.hooks if h.running]

    def _warn(self, decision: Decision, message: str, config: Config) -> None:
        if decision.action is None or decision.reason is None or decision.at is None:
            return
        log.warning("warning", action=str(decision.action), reason=str(decision.reason),
                    at=format_timestamp(decision.at), message=message)
        try:
            actions.write_warning(self.runtime, action=decision.action, reason=decision.reason,
                                  at=decision.at, message=message)
            self.warning_key = decision.key
        except OSError as exc:
            log.error("warning.file_failed", error=exc.strerror)
        if config.wall:
            actions.wall(f"spored: {message}")

    def _start_hook(self, state: AgentState, config: Config, *, key: str, reason: Reason, action: str,
                    until: datetime) -> AgentState:
        state = replace(state, hooks=(*state.hooks, key))
        run = actions.start_hook(config.pre_stop_hook, reason=reason, action=action, until=until)
        if run is not None:
            self.hooks.append(run)
        return state
