"""Exit codes of both programs with what each means: part of the contract, owned once here.

`spawn` and every `spored` command except `run` use ``ExitStatus`` (``errors.exit_code_for`` maps
an exception to one). `spored run` and `spored status` add ``AgentExit``, read by systemd and by
the people who run the agent. The README's exit-code tables are generated from these mappings.
"""

from __future__ import annotations

import enum


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


class AgentExit(enum.IntEnum):
    """The agent's own codes, from sysexits.h: EX_UNAVAILABLE, EX_TEMPFAIL, EX_CONFIG."""

    NO_STATUS = 69
    RESTART = 75
    CONFIG = 78


AGENT_EXIT_DESCRIPTIONS: dict[AgentExit, str] = {
    AgentExit.NO_STATUS: "`spored status`: no status file (the agent is not running)",
    AgentExit.RESTART: "`spored run`: the same failure repeated; systemd restarts the agent",
    AgentExit.CONFIG: "`spored run`: invalid configuration; systemd does not restart it "
                      "(RestartPreventExitStatus)",
}
