"""The agent's local configuration: /etc/spored/spored.toml plus /etc/spored/spored.d/*.toml.

Mechanics only (intervals, endpoints, dry-run, the backstop) plus ``[lifecycle]``: the launch-time
fallback copy of the lifecycle tags, used when tags can't be read. Unknown keys and bad values are
errors (ConfigError, exit 2), never silently ignored. The defaults below double as the schema.

The controller renders this file at launch with ``render`` so both sides share one schema.
Pure apart from ``load``, which reads files.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from spored.contract import (
    Action,
    format_duration,
    format_timestamp,
    parse_action,
    parse_duration,
    parse_timestamp,
)
from spored.errors import ConfigError, ValidationError

DEFAULT_PATH = Path("/etc/spored/spored.toml")


@dataclass(frozen=True)
class Lifecycle:
    """Launch-time fallback copy of the lifecycle tags."""

    ttl: timedelta | None = None
    expires_at: datetime | None = None
    idle_timeout: timedelta | None = None
    on_complete: Action = Action.TERMINATE


@dataclass(frozen=True)
class Config:
    # Where to find instance metadata; AWS_EC2_METADATA_SERVICE_ENDPOINT overrides when unset here.
    imds_endpoint: str = ""
    # Optional EC2 endpoint (AWS_ENDPOINT_URL is honoured by boto3 too).
    ec2_endpoint: str = ""
    # Observe and decide, log what would happen, never act.
    dry_run: bool = False
    # How often tags are re-read (with jitter) from instance metadata: one request for the list
    # and one per spawn: key. Tags are also re-read on SIGHUP and right before every action, so
    # this only bounds how late a change shows in status and warnings.
    tag_refresh: timedelta = timedelta(minutes=2)
    # How often tags are re-read with ec2:DescribeTags when the launch did not put tags in
    # metadata (API calls cost: 5m = 12 calls per instance-hour). SIGHUP re-reads at once, and
    # tags are always re-read right before an action.
    tag_refresh_api: timedelta = timedelta(minutes=5)
    # How often spot/rebalance notices are polled.
    spot_poll: timedelta = timedelta(seconds=2)
    # How often idle signals are sampled, the decision re-evaluated and the watchdog fed
    # (WatchdogSec=90 in the unit: three ticks). Deadlines do not wait for it: a timer fires at the
    # exact time; notices, signals, tag refreshes and clock steps are events of their own. Each
    # tick wakes the process (~4 ms of CPU): 30 s keeps an idle agent under 0.02 % of a core.
    tick: timedelta = timedelta(seconds=30)
    # Warnings before a planned action.
    warn_at: tuple[timedelta, ...] = (timedelta(minutes=10), timedelta(minutes=5), timedelta(minutes=1))
    # Delay between `spored complete` and the on-complete action.
    completion_delay: timedelta = timedelta(seconds=30)
    # Marker file `spored complete` writes; its directory must not be world-writable.
    completion_marker: str = "/run/spored/complete"
    # No idle action before the instance has been up this long.
    boot_grace: timedelta = timedelta(minutes=10)
    # Executable run on spot interruption / rebalance / before a planned action.
    pre_stop_hook: str = ""
    pre_stop_timeout: timedelta = timedelta(seconds=90)
    # What to do when hibernate is refused: "stop" or "terminate".
    hibernate_fallback: Action = Action.STOP
    # The fallback ladder: when the due action (terminate, stop or hibernate) is denied or keeps
    # failing for `backstop_after` past its time, request an OS power-off. The instance's shutdown
    # behaviour makes the power-off mean the lifecycle's action (terminate, or stop for stop and
    # hibernate; a hibernate lifecycle loses its RAM state that way, and the agent logs it).
    backstop: bool = True
    backstop_after: timedelta = timedelta(minutes=2)
    # The OS-level failsafe the user-data arms (a transient systemd timer that powers off): the
    # agent keeps it at the deadline + `failsafe_grace`, or, without a deadline, at now + idle
    # timeout + `failsafe_grace` (the "must be managed by" window). See docs/failsafe.md.
    failsafe: bool = True
    failsafe_grace: timedelta = timedelta(minutes=30)
    # Wall logged-in users before actions.
    wall: bool = True
    lifecycle: Lifecycle = field(default_factory=Lifecycle)


_DURATION_KEYS = {"tag_refresh", "tag_refresh_api", "spot_poll", "tick", "completion_delay", "boot_grace",
                  "pre_stop_timeout", "backstop_after", "failsafe_grace"}
_BOOL_KEYS = {"dry_run", "backstop", "wall", "failsafe"}
_STR_KEYS = {"imds_endpoint", "ec2_endpoint", "completion_marker", "pre_stop_hook"}


def _coerce(section: dict[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    known = {f.name for f in fields(Config)} - {"lifecycle"}
    for key, value in section.items():
        where = f"{source}: {key}"
        if key not in known:
            raise ConfigError(f"{where}: unknown key; accepted: {', '.join(sorted(known))}, [lifecycle]")
        try:
            if key in _DURATION_KEYS:
                out[key] = parse_duration(_str(value, where), field=where)
            elif key in _BOOL_KEYS:
                if not isinstance(value, bool):
                    raise ValidationError(where, f"{value!r} is not true or false")
                out[key] = value
            elif key in _STR_KEYS:
                out[key] = _str(value, where)
            elif key == "warn_at":
                if not isinstance(value, list):
                    raise ValidationError(where, "must be a list of durations")
                out[key] = tuple(sorted((parse_duration(_str(v, where), field=where) for v in value),
                                        reverse=True))
            elif key == "hibernate_fallback":
                action = parse_action(_str(value, where), field=where)
                if action is Action.HIBERNATE:
                    raise ValidationError(where, "must be stop or terminate")
                out[key] = action
        except ValidationError as exc:
            raise ConfigError(exc.message) from None
    return out


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(where, f"{value!r} must be a string")
    return value


def _lifecycle(section: Any, source: str, base: Lifecycle) -> Lifecycle:
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: [lifecycle] must be a table")
    values: dict[str, Any] = {}
    for key, value in section.items():
        where = f"{source}: lifecycle.{key}"
        try:
            if key in ("ttl", "idle_timeout"):
                values[key] = parse_duration(_str(value, where), field=where)
            elif key == "expires_at":
                values[key] = parse_timestamp(_str(value, where), field=where)
            elif key == "on_complete":
                values[key] = parse_action(_str(value, where), field=where)
            else:
                raise ConfigError(f"{where}: unknown key; accepted: ttl, expires_at, idle_timeout, "
                                  "on_complete")
        except ValidationError as exc:
            raise ConfigError(exc.message) from None
    return replace(base, **values)


def parse(text: str, *, source: str = "<config>", base: Config | None = None) -> Config:
    """Parse one TOML document on top of ``base``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    cfg = base or Config()
    lifecycle = cfg.lifecycle
    if "lifecycle" in data:
        lifecycle = _lifecycle(data.pop("lifecycle"), source, lifecycle)
    return replace(cfg, lifecycle=lifecycle, **_coerce(data, source))


def load(path: Path = DEFAULT_PATH, *, required: bool = False) -> Config:
    """The main file, then every ``spored.d/*.toml`` beside it in name order."""
    cfg = Config()
    if path.exists():
        cfg = parse(_read(path), source=str(path), base=cfg)
    elif required:
        raise ConfigError(f"{path}: no such file")
    dropin = path.parent / "spored.d"
    if dropin.is_dir():
        for extra in sorted(dropin.glob("*.toml")):
            cfg = parse(_read(extra), source=str(extra), base=cfg)
    return cfg


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _toml_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    # TOML has \uXXXX for the BMP and \UXXXXXXXX beyond it ("\ue0001" would read as U+E000 + "1").
    escaped = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF
                      else f"\\U{ord(c):08x}" for c in escaped)
    return f'"{escaped}"'


def render(cfg: Config) -> str:
    """TOML for ``cfg``, only the keys that differ from the defaults. ``parse(render(c)) == c``."""
    default = Config()
    lines = ["# Written by spawn at launch. Mechanics for spored; lifecycle is the fallback copy",
             "# of the instance's tags, used only when they cannot be read."]
    for f in fields(Config):
        if f.name == "lifecycle":
            continue
        value = getattr(cfg, f.name)
        if value == getattr(default, f.name):
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, timedelta):
            text = _toml_str(format_duration(value))
        elif isinstance(value, tuple):
            text = "[" + ", ".join(_toml_str(format_duration(v)) for v in value) + "]"
        else:
            text = _toml_str(str(value))
        lines.append(f"{f.name} = {text}")
    lc = cfg.lifecycle
    lines.append("")
    lines.append("[lifecycle]")
    if lc.ttl is not None:
        lines.append(f"ttl = {_toml_str(format_duration(lc.ttl))}")
    if lc.expires_at is not None:
        lines.append(f"expires_at = {_toml_str(format_timestamp(lc.expires_at))}")
    if lc.idle_timeout is not None:
        lines.append(f"idle_timeout = {_toml_str(format_duration(lc.idle_timeout))}")
    lines.append(f"on_complete = {_toml_str(lc.on_complete.value)}")
    return "\n".join(lines) + "\n"
