"""How `spawn sandbox` tells its story.

Three renderings of one stream of events:
- ``--json``: one JSON object per line on stdout, each with a stable ``event`` field and ``t``
  (seconds since the sandbox started);
- on a terminal: milestones printed as they happen above a live status line (rich);
- otherwise: the same milestones as plain lines on stderr, and the status line every few seconds.
"""

from __future__ import annotations

import json
import time
from typing import Any

from controller.output import Output

# Stable event names of the --json stream (docs/sandbox.md documents them from this table).
EVENTS: dict[str, str] = {
    "sandbox-started": "the local cloud (moto server on loopback) is up",
    "launch-step": "progress and warnings of `spawn launch` (the same code, run by the sandbox)",
    "instance-launched": "the instance was launched through the same code as `spawn launch`",
    "role-provisioned": "the instance role launch created, read back with its policy documents",
    "user-data-stored": "the user-data launch rendered is stored with the instance; its bundle URL "
                        "serves the sha256 it names; it is not executed",
    "imds-started": "the IMDS emulator answers for the instance and serves its role credentials",
    "agent-started": "`spored run` started as a local process (with the config changes the sandbox made)",
    "keep": "--keep: the environment that lets `spawn` act on the local cloud from another terminal",
    "agent": "one log line of the agent (its own event name in `agent_event`)",
    "agent-ready": "the agent read its tags and made its first decision",
    "countdown": "seconds left before the action the agent plans (one event per second)",
    "warning": "the agent warned before acting, or saw a spot/rebalance notice",
    "spot-notice-armed": "the IMDS emulator now serves a spot interruption notice",
    "completion-signalled": "the sandbox, as the workload, ran `spored complete`",
    "terminate-call": "the agent called EC2 to end its instance (`by: cloud` for a spot reclaim)",
    "instance-state": "the instance's state in the local cloud changed",
    "finished": "the outcome: final state, who ended the instance and why; or `failed` and the error",
}


class Display:
    def __init__(self, out: Output, *, status_every: float = 5.0) -> None:
        self.out = out
        self.started = time.monotonic()
        self._live: Any = None
        self._console: Any = None
        self._status = ""
        self._status_every = status_every
        self._status_printed_at = -1e9

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 2)

    def __enter__(self) -> Display:
        if self.out.interactive:
            from rich.console import Console
            from rich.live import Live
            from rich.text import Text

            self._console = Console(file=self.out.stderr)
            self._live = Live(Text(""), console=self._console, refresh_per_second=8, transient=True,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def event(self, name: str, message: str, /, *, mark: str = "✓", **fields: Any) -> None:
        """A milestone: a JSON line, or a human line (``message``) above the status."""
        if name not in EVENTS:
            raise ValueError(f"undeclared sandbox event {name!r}")
        if self.out.json:
            record = {"event": name, "t": self.elapsed(), **fields}
            self.out.stdout.write(json.dumps(record, default=str) + "\n")
            self.out.stdout.flush()
            return
        line = f"[+{self.elapsed():5.1f}s] {mark} {message}"
        if self._console is not None:
            from rich.text import Text

            self._console.print(Text(line))
        else:
            self.out.stderr.write(line + "\n")
            self.out.stderr.flush()

    def text(self, body: str) -> None:
        """A block for people (a policy document, the environment to export); not in --json."""
        if self.out.json:
            return
        if self._console is not None:
            from rich.text import Text

            self._console.print(Text(body))
        else:
            self.out.stderr.write(body.rstrip("\n") + "\n")
            self.out.stderr.flush()

    def status(self, text: str) -> None:
        """The live status line (terminal), or a plain line every few seconds otherwise."""
        if self.out.json or text == self._status:
            return
        self._status = text
        if self._live is not None:
            from rich.text import Text

            self._live.update(Text(f"  {text}", style="bold"))
            return
        now = time.monotonic()
        if now - self._status_printed_at >= self._status_every:
            self._status_printed_at = now
            self.out.stderr.write(f"[+{self.elapsed():5.1f}s]   {text}\n")
            self.out.stderr.flush()
