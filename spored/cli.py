"""`spored` entry point: run | status | check | complete.

Results on stdout (``--json`` on every command), logs on stderr, except ``spored run`` which writes
JSON log lines to stdout for journald.

Exit codes: ``spored --help`` lists them, from ``spored.exit_codes`` (shared with ``spawn``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from spored import __version__
from spored import config as config_mod
from spored.argparsing import Parser
from spored.errors import ConfigError, ExitStatus, SpawnError, UsageError, ValidationError, exit_code_for
from spored.exit_codes import (
    AGENT_EXIT_DESCRIPTIONS,
    EXIT_DESCRIPTIONS,
    SPORED_STATUSES,
    AgentExit,
    help_epilog,
)

EXIT_NO_STATUS = AgentExit.NO_STATUS
EXIT_NOT_RECORDED = AgentExit.TEMPFAIL
# Importing structlog imports rich when it is installed (structlog/dev.py, for its console
# renderer). The daemon renders JSON only (spored/logs.py), so `spored run` keeps rich out: in an
# environment shared with the controller (a checkout, the sandbox) it would cost ~7 MiB of RSS.
# The bundle's venv has no rich at all (controller/bundle_files/agent.lock).
NOT_IN_THE_DAEMON = ("rich",)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="spored", description="The spawn agent: ends its own instance when its "
                     "lifecycle says so (TTL, completion, idle, spot), only if tagged spawn:managed=true.",
                     epilog=help_epilog([(c, EXIT_DESCRIPTIONS[c]) for c in SPORED_STATUSES],
                                        AGENT_EXIT_DESCRIPTIONS.items()),
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"spored {__version__}")
    parser.add_argument("--config", type=Path,
                        default=Path(os.environ.get("SPORED_CONFIG", str(config_mod.DEFAULT_PATH))),
                        help="configuration file (default: $SPORED_CONFIG or /etc/spored/spored.toml); "
                             "spored.d/*.toml beside it is read too")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.add_parser("run", help="the daemon (foreground, for systemd Type=notify)")
    for name, text in (("status", "what the running agent believes"),
                       ("check", "observe and decide once; print the decision; act on nothing"),
                       ("complete", "the workload is done: trigger spawn:on-complete after the delay")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "complete":
            p.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                           help="how long to wait for a running agent to record it (default: 3 ticks + 5 s)")
    return parser


def _load_config(path: Path) -> config_mod.Config:
    return config_mod.load(path)


# ------------------------------------------------------------------------------------------- run
def cmd_run(args: argparse.Namespace) -> int:
    from spored import logs
    from spored.daemon import EXIT_CONFIG, Agent

    logs.configure(json=True, stream=sys.stdout, level=args.log_level)
    log = logs.get("spored")
    try:
        cfg = _load_config(args.config)
    except ConfigError as exc:
        log.error("config.invalid", error=exc.message, exit_code=EXIT_CONFIG)
        return EXIT_CONFIG
    return Agent(cfg, args.config).run()


# ----------------------------------------------------------------------------------------- check
def cmd_check(args: argparse.Namespace) -> int:
    from spored.daemon import Agent

    cfg = _load_config(args.config)
    agent = Agent(cfg, args.config, read_only=True)
    agent.refresh_identity()
    agent.refresh_tags()
    agent.poll_notices()
    agent.sample()
    time.sleep(1.0)  # one short window for the idle signals
    agent.sample()
    agent.decide_only()
    status = agent.status()
    if args.json:
        print(json.dumps(status, indent=1))
    else:
        _print_status(status, datetime.now(UTC))
    return 0


# ---------------------------------------------------------------------------------------- status
def _read_status() -> dict[str, Any]:
    from spored.daemon import STATUS_FILE
    from spored.state import runtime_dir, state_dir

    for directory in (runtime_dir(), state_dir()):
        path = directory / STATUS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            raise SpawnError(f"{path}: unreadable: {exc}") from None
        if isinstance(data, dict):
            data["status_file"] = str(path)
            return data
    raise SpawnError("no status file: is spored running? (systemctl status spored)")


def _annotate(status: dict[str, Any], now: datetime) -> dict[str, Any]:
    from spored.contract import format_remaining, parse_timestamp

    out = dict(status)
    if out.get("deadline"):
        out["remaining"] = format_remaining(parse_timestamp(out["deadline"]) - now)
    updated = out.get("updated_at")
    if updated:
        age = now - parse_timestamp(updated)
        tick = float(out.get("tick_seconds") or 10)
        out["age_seconds"] = int(age.total_seconds())
        out["stale"] = age > timedelta(seconds=3 * tick + 30)
    return out


def _print_status(status: dict[str, Any], now: datetime) -> None:
    s = _annotate(status, now)
    nxt = s.get("next") or {}
    lines = [
        f"instance:     {s.get('instance_id') or 'unknown'}  (managed: {s.get('managed')})",
        f"deadline:     {s.get('deadline') or 'none'}"
        + (f"  ({s['remaining']} left, from {s.get('deadline_source')})" if s.get("remaining") else ""),
        f"next:         {nxt.get('verb', '?')}"
        + (f" {nxt['action']} at {nxt['at']} ({nxt['reason']})" if nxt.get("at") else "")
        + f": {nxt.get('why', '')}",
    ]
    idle = s.get("idle") or {}
    lines.append(f"idle:         timeout {idle.get('timeout') or 'none'}, "
                 f"idle since {idle.get('since') or '-'}")
    for sig in idle.get("signals", []):
        verdict = "idle" if sig.get("idle") else "active"
        lines.append(f"  {sig['name']:<20} {sig.get('value')!s:>12} / threshold {sig.get('threshold')!s:<10}"
                     f" {verdict} {sig.get('note', '')}".rstrip())
    comp = s.get("completion") or {}
    signalled = "at " + comp["completed_at"] if comp.get("completed_at") else "not signalled"
    lines.append(f"completion:   {signalled}"
                 + (f", action at {comp['action_at']}" if comp.get("action_at") else ""))
    tags = s.get("tags") or {}
    lines.append(f"tags:         from {tags.get('source')}, "
                 f"last refresh {tags.get('last_refresh') or 'never'}")
    lines.append(f"last error:   {s.get('last_error') or 'none'}")
    for problem in s.get("problems", []):
        lines.append(f"problem:      {problem}")
    if s.get("dry_run"):
        lines.append("dry run:      yes (nothing is ever done)")
    if s.get("stale"):
        lines.append(f"STALE:        status is {s['age_seconds']}s old: is the agent running?")
    print("\n".join(lines))


def cmd_status(args: argparse.Namespace) -> int:
    try:
        status = _read_status()
    except SpawnError as exc:
        if args.json:
            print(json.dumps(exc.to_dict()))
        print(f"spored status: {exc.message}", file=sys.stderr)
        return EXIT_NO_STATUS
    now = datetime.now(UTC)
    if args.json:
        print(json.dumps(_annotate(status, now), indent=1))
    else:
        _print_status(status, now)
    return 0


# -------------------------------------------------------------------------------------- complete
def _running_agent(now: datetime) -> dict[str, Any] | None:
    """The running agent's status, or None when no agent has written a fresh one."""
    try:
        status = _annotate(_read_status(), now)
    except SpawnError:
        return None
    return None if status.get("stale", True) else status


def _acknowledged(marker: Path, wait: float) -> tuple[bool, dict[str, Any] | None]:
    """Wait up to ``wait`` seconds for the running agent to consume the marker, which it does only
    once the completion is in its saved state. (consumed, the agent's last status)."""
    end = time.monotonic() + wait
    status = _running_agent(datetime.now(UTC))
    while time.monotonic() < end:
        if not marker.exists():
            return True, status
        time.sleep(0.2)
        status = _running_agent(datetime.now(UTC)) or status
    return not marker.exists(), status


def cmd_complete(args: argparse.Namespace) -> int:
    from spored.contract import format_duration, format_timestamp
    from spored.state import write_atomic

    cfg = _load_config(args.config)
    marker = Path(cfg.completion_marker)
    directory = marker.parent
    try:
        mode = directory.stat().st_mode
    except OSError as exc:
        raise ValidationError("completion_marker", f"{directory}: {exc.strerror}; the agent's runtime "
                              "directory must exist (is spored installed?)") from None
    if mode & 0o002:
        raise ValidationError("completion_marker", f"{directory} is world-writable; refusing (any local "
                              "user could end the instance). Use a directory only the owner and root can "
                              "write, e.g. /run/spored")
    stamp = format_timestamp(datetime.now(UTC))
    try:
        write_atomic(marker, stamp + "\n", mode=0o644)  # fsync'd: written means on disk
    except OSError as exc:
        raise UsageError(f"{marker}: cannot write: {exc.strerror}; the completion was NOT recorded",
                         hint="run as a member of the spored group") from None
    result: dict[str, Any] = {"marker": str(marker), "written_at": stamp,
                              "delay": format_duration(cfg.completion_delay)}
    agent = _running_agent(datetime.now(UTC))
    if agent is None:
        result["recorded_by_agent"] = None
        text = (f"completion written ({marker}); spored is not running: it acts on spawn:on-complete "
                f"{format_duration(cfg.completion_delay)} after it starts and reads it")
    else:
        wait = args.wait if args.wait is not None else 3 * float(agent.get("tick_seconds") or 10) + 5
        consumed, agent = _acknowledged(marker, wait)
        result["recorded_by_agent"] = consumed
        if not consumed:
            state = (agent or {}).get("state") or {}
            why = state.get("error") or (agent or {}).get("last_error") or "no answer"
            result["error"] = (f"spored has not recorded the completion within {wait:g}s ({why}); the "
                               f"marker {marker} is kept and spored retries")
            if args.json:
                print(json.dumps(result))
            print(f"spored complete: {result['error']}", file=sys.stderr)
            return EXIT_NOT_RECORDED
        text = (f"completion recorded by spored ({marker}); it acts on spawn:on-complete "
                f"{format_duration(cfg.completion_delay)} after {stamp}")
    if args.json:
        print(json.dumps(result))
    else:
        print(text)
    return 0


COMMANDS = {"run": cmd_run, "status": cmd_status, "check": cmd_check, "complete": cmd_complete}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return ExitStatus.USAGE
    if args.command == "run" and "structlog" not in sys.modules:  # a fresh process: the daemon's own
        for name in NOT_IN_THE_DAEMON:  # None in sys.modules: `import name` raises ImportError
            sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    from spored import logs

    if args.command != "run":
        logs.configure(json=False, stream=sys.stderr, level=args.log_level if args.command != "check"
                       else "warning")
    try:
        return COMMANDS[args.command](args)
    except SpawnError as exc:
        if getattr(args, "json", False):
            print(json.dumps(exc.to_dict()))
        print(f"spored {args.command}: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return int(exc.exit_status)
    except KeyboardInterrupt:
        return int(exit_code_for(KeyboardInterrupt()))


if __name__ == "__main__":
    raise SystemExit(main())
