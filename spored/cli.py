"""`spored` entry point: run | status | check | complete.

Results on stdout (``--json`` on every command), logs on stderr, except ``spored run`` which writes
JSON log lines to stdout for journald.

Exit codes: 0 ok; 2 usage, validation or configuration error (``check``, ``complete``, ``status``);
``spored run``: 0 after SIGTERM, 75 after repeated identical failures (systemd restarts it), 78 for
a configuration error (systemd does not restart it: RestartPreventExitStatus=78);
``spored status``: 69 when there is no status file (the agent is not running).
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
from spored.errors import ConfigError, ExitStatus, SpawnError, UsageError, ValidationError, exit_code_for

EXIT_NO_STATUS = 69
# Importing structlog imports rich when it is installed (structlog/dev.py, for its console
# renderer). The daemon renders JSON only (spored/logs.py), so `spored run` keeps rich out: in an
# environment shared with the controller (a checkout, the sandbox) it would cost ~7 MiB of RSS.
# The bundle's venv has no rich at all (controller/bundle_files/agent.lock).
NOT_IN_THE_DAEMON = ("rich",)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(ExitStatus.USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spored", description="The spawn agent: ends its own instance when its "
                     "lifecycle says so (TTL, completion, idle, spot), only if tagged spawn:managed=true.",
                     epilog=__doc__.split("Exit codes:", 1)[1].strip() if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"spored {__version__}")
    parser.add_argument("--config", type=Path,
                        default=Path(os.environ.get("SPORED_CONFIG", str(config_mod.DEFAULT_PATH))),
                        help="configuration file (default: $SPORED_CONFIG or /etc/spored/spored.toml); "
                             "spored.d/*.toml beside it is read too")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.add_parser("run", help="the daemon (foreground, for systemd Type=notify)")
    for name, text in (("status", "what the running agent believes"),
                       ("check", "observe and decide once; print the decision; act on nothing"),
                       ("complete", "the workload is done: trigger spawn:on-complete after the delay")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--json", action="store_true", help="machine-readable output")
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
def cmd_complete(args: argparse.Namespace) -> int:
    from spored.contract import format_duration, format_timestamp

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
        marker.write_text(stamp + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{marker}: cannot write: {exc.strerror}",
                         hint="run as a member of the spored group") from None
    result = {"marker": str(marker), "written_at": stamp,
              "delay": format_duration(cfg.completion_delay)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"completion recorded ({marker}); spored acts on spawn:on-complete "
              f"{format_duration(cfg.completion_delay)} after it notices")
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
