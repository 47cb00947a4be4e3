"""The defaults file: the user's own defaults for `spawn launch`, in ``~/.config/spawn/config.toml``.

Not to be confused with `spawn config`, which reads and writes an instance's lifecycle tags: this
file only fills in launch flags the user did not give. Where: ``$XDG_CONFIG_HOME/spawn/config.toml``
(default ``~/.config/spawn/config.toml``). Keys (TOML, each optional)::

    region = "eu-west-1"
    ssh-key = "~/.ssh/id_ed25519.pub"
    ssh-from = ["203.0.113.7/32"]            # or one string
    ttl = "4h"
    idle-timeout = "30m"
    iam-policy = "s3:ReadOnly@my-bucket"     # or a list of templates
    agent-bundle = "~/spored-bundle.tar.gz"  # a file, or an https URL

Precedence, per key: the flag > the environment (``AWS_REGION``/``AWS_DEFAULT_REGION`` for region,
``SPAWN_AGENT_BUNDLE`` for agent-bundle) > this file > the built-in default. ``--no-timeout`` drops
the file's ttl and idle-timeout. The file is validated like the flags, as a whole, whenever it is
read: an unknown key, a wrong type or a bad value exits 2 naming the file, the key and what is
accepted, before any AWS call.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spored.errors import ValidationError

FILE_NAME = "config.toml"


@dataclass(frozen=True)
class Key:
    name: str  # in the file
    flag: str  # the launch flag it stands for
    dest: str  # the argparse destination
    env: tuple[str, ...]  # environment variables that win over the file
    many: bool  # a list (or one string) in the file
    accepted: str


KEYS: dict[str, Key] = {k.name: k for k in (
    Key("region", "--region", "region", ("AWS_REGION", "AWS_DEFAULT_REGION"), False,
        "a region name, e.g. \"us-east-1\""),
    Key("ssh-key", "--ssh-key", "ssh_key", (), False, "the path of an OpenSSH public key"),
    Key("ssh-from", "--ssh-from", "ssh_from", (), True, "a CIDR or a list of CIDRs, e.g. \"203.0.113.7/32\""),
    Key("ttl", "--ttl", "ttl", (), False, "a duration, e.g. \"4h\""),
    Key("idle-timeout", "--idle-timeout", "idle_timeout", (), False, "a duration, e.g. \"30m\""),
    Key("iam-policy", "--iam-policy", "iam_policy", (), True,
        "a template list or a list of templates, e.g. \"s3:ReadOnly@my-bucket\""),
    Key("agent-bundle", "--agent-bundle", "agent_bundle", ("SPAWN_AGENT_BUNDLE",), False,
        "a bundle file or an https URL"),
)}


def path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "spawn" / FILE_NAME


def _validator(key: Key) -> Callable[[Any], Any]:
    """The flag's own check for one value (a string, or a list for ``many`` keys)."""
    from controller.launch import launch_flags
    from spored.contract import parse_duration

    checks: dict[str, Callable[[Any], Any]] = {
        "region": lambda v: launch_flags._match(v, launch_flags.REGION_RE, key.flag, key.accepted),
        "ssh-key": lambda v: launch_flags.read_public_key(Path(v).expanduser()),
        "ssh-from": lambda v: [launch_flags._cidr(c) for c in v],
        "ttl": lambda v: parse_duration(v, field=key.flag),
        "idle-timeout": lambda v: parse_duration(v, field=key.flag),
        "iam-policy": _check_policy,
        "agent-bundle": lambda v: launch_flags._agent_bundle(v if "://" in v else str(Path(v).expanduser())),
    }
    return checks[key.name]


def _check_policy(values: list[str]) -> None:
    from controller.iam.templates import parse_list

    parse_list(",".join(values))


def _shape(file: Path, key: Key, raw: Any) -> str | list[str]:
    where = f"{file}: {key.name}"
    if key.many and isinstance(raw, list):
        if not raw or not all(isinstance(v, str) and v.strip() for v in raw):
            raise ValidationError(where, f"{raw!r}; accepted: {key.accepted}")
        return [v.strip() for v in raw]
    if not isinstance(raw, str) or not raw.strip():
        raise ValidationError(where, f"{raw!r} is not a non-empty string; accepted: {key.accepted}")
    return [raw.strip()] if key.many else raw.strip()


def load(file: Path | None = None) -> dict[str, str | list[str]]:
    """The file's values, validated; ``{}`` when there is no file. Raises ValidationError (exit 2)."""
    file = file or path()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ValidationError(str(file), f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError(str(file), f"not valid TOML ({exc}); accepted: key = \"value\" lines") from None
    values: dict[str, str | list[str]] = {}
    for name, raw in data.items():
        key = KEYS.get(name)
        if key is None:
            raise ValidationError(f"{file}: {name}", f"unknown key; accepted: {', '.join(KEYS)} "
                                  "(instance tags are `spawn config`, not this file)")
        value = _shape(file, key, raw)
        try:
            _validator(key)(value)
        except ValidationError as exc:
            detail = exc.message.removeprefix(f"{exc.field}: ")
            raise ValidationError(f"{file}: {name}", f"{detail} (accepted: {key.accepted})") from None
        values[name] = value
    return values


def source_of(key: Key, given: Any, values: dict[str, str | list[str]]) -> str:
    """Where the effective value of ``key`` comes from: flag, environment, file or built-in."""
    if given not in (None, [], ()):
        return "flag"
    if any(os.environ.get(v) for v in key.env):
        return "environment"
    return "file" if key.name in values else "built-in"


def apply(args: argparse.Namespace, file: Path | None = None) -> dict[str, str]:
    """Fill launch flags the user did not give from the file (where no environment variable
    decides); returns ``{key: source}`` for every key."""
    values = load(file)
    sources: dict[str, str] = {}
    env_defaults = {k.dest: os.environ.get(k.env[0]) for k in KEYS.values() if k.env}
    for key in KEYS.values():
        given = getattr(args, key.dest, None)
        if key.name == "agent-bundle" and given and given == env_defaults.get(key.dest):
            given = None  # the parser's default came from SPAWN_AGENT_BUNDLE: the environment
        source = source_of(key, given, values)
        if source == "file" and key.name in ("ttl", "idle-timeout") and getattr(args, "no_timeout", False):
            source = "built-in"  # --no-timeout: no timeout from the file either
        if source == "file":
            value = values[key.name]
            if key.name == "iam-policy":
                value = ",".join(value)
            elif key.name in ("ssh-key", "agent-bundle") and isinstance(value, str) and "://" not in value:
                value = str(Path(value).expanduser())
            setattr(args, key.dest, value)
        sources[key.name] = source
    return sources


def show(file: Path | None = None) -> dict[str, Any]:
    """What the file says, and where each launch default comes from without flags."""
    file = file or path()
    values = load(file)
    keys = {}
    for key in KEYS.values():
        source = source_of(key, None, values)
        value: Any = values.get(key.name) if source == "file" else None
        if source == "environment":
            value = next(os.environ[v] for v in key.env if os.environ.get(v))
        keys[key.name] = {"value": value, "source": source, "flag": key.flag, "env": list(key.env)}
    return {"path": str(file), "exists": file.is_file(), "keys": keys}
