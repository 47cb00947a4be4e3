"""Exit codes of both programs with what each means: part of the contract, owned once here.

`spawn` and every `spored` command except `run` use ``ExitStatus`` (``errors.exit_code_for`` maps
an exception to one). `spored run`, `spored status` and `spored complete` add ``AgentExit``, read by
systemd and by the people who run the agent. The documentation's exit-code tables and both
programs' ``--help`` are generated from these mappings.
"""

from __future__ import annotations

import enum
import textwrap
from collections.abc import Iterable


class ExitStatus(enum.IntEnum):
    OK = 0
    UNEXPECTED = 1
    USAGE = 2
    CREDENTIALS = 3
    AWS = 4
    PREFLIGHT = 5
    SELFTEST = 6
    AGENT_UNCONFIRMED = 7
    INTERRUPTED = 130


EXIT_DESCRIPTIONS: dict[ExitStatus, str] = {
    ExitStatus.OK: "success",
    ExitStatus.UNEXPECTED: "unexpected error (a bug: please report it)",
    ExitStatus.USAGE: "usage or validation error; nothing was changed",
    ExitStatus.CREDENTIALS: "missing credentials or permission denied",
    ExitStatus.AWS: "AWS API error",
    ExitStatus.PREFLIGHT: "`spawn doctor`: a check that would block a launch failed (each FAIL line "
                          "says how to fix it)",
    ExitStatus.SELFTEST: "`spawn selftest`: a stage failed (its fix is printed); everything the run "
                         "created was removed",
    ExitStatus.AGENT_UNCONFIRMED: ("`spawn launch`: the instance runs (kept), but its agent was not "
                                   "confirmed within the wait or reports denied permissions; the failsafe "
                                   "powers it off at the time printed unless the agent reports"),
    ExitStatus.INTERRUPTED: "interrupted (Ctrl-C)",
}

# The shared codes `spored` returns besides its own (``AgentExit``).
SPORED_STATUSES = (ExitStatus.OK, ExitStatus.UNEXPECTED, ExitStatus.USAGE, ExitStatus.INTERRUPTED)


class AgentExit(enum.IntEnum):
    """The agent's own codes, from sysexits.h: EX_UNAVAILABLE, EX_TEMPFAIL, EX_CONFIG.

    TEMPFAIL ("try again later") is returned by two commands: `spored run` (systemd restarts it)
    and `spored complete` (the agent has not recorded the completion yet)."""

    NO_STATUS = 69
    TEMPFAIL = 75
    CONFIG = 78


AGENT_EXIT_DESCRIPTIONS: dict[AgentExit, str] = {
    AgentExit.NO_STATUS: "`spored status`: no status file (the agent is not running)",
    AgentExit.TEMPFAIL: "`spored run`: the same failure repeated; systemd restarts the agent. "
                        "`spored complete`: the running agent has not recorded the completion within "
                        "`--wait` (e.g. its state directory cannot be written); the marker is kept and "
                        "the agent retries",
    AgentExit.CONFIG: "`spored run`: invalid configuration; systemd does not restart it "
                      "(RestartPreventExitStatus)",
}


def help_epilog(*tables: Iterable[tuple[int, str]]) -> str:
    """The ``exit codes:`` block of a program's ``--help`` (for RawDescriptionHelpFormatter), from
    ``(code, description)`` pairs such as ``EXIT_DESCRIPTIONS.items()``."""
    lines = ["exit codes:"]
    for code, text in sorted(row for table in tables for row in table):
        lines += textwrap.wrap(text, width=96, initial_indent=f"  {int(code):<5}", subsequent_indent=" " * 7,
                               break_on_hyphens=False)
    return "\n".join(lines)
