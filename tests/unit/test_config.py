"""The agent's config: render/parse round trip, loud errors, drop-ins applied in name order."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from spored.config import Config, Lifecycle, load, parse, render
from spored.contract import MAX_DURATION, Action
from spored.errors import ConfigError, ExitStatus

# Time limits per example would turn a loaded shared machine into failures.
NO_DEADLINE = settings(deadline=None)

durations = st.integers(min_value=1, max_value=int(MAX_DURATION.total_seconds())).map(
    lambda s: timedelta(seconds=s))
moments = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(
    lambda d: d.replace(microsecond=0, tzinfo=UTC))
texts = st.text(max_size=30)

lifecycles = st.builds(
    Lifecycle,
    ttl=st.none() | durations,
    expires_at=st.none() | moments,
    idle_timeout=st.none() | durations,
    on_complete=st.sampled_from(list(Action)),
)
configs = st.builds(
    Config,
    imds_endpoint=texts, ec2_endpoint=texts, dry_run=st.booleans(),
    tag_refresh=durations, tag_refresh_api=durations, spot_poll=durations, tick=durations,
    warn_at=st.lists(durations, max_size=4).map(lambda ws: tuple(sorted(ws, reverse=True))),
    completion_delay=durations, completion_marker=texts, boot_grace=durations,
    pre_stop_hook=texts, pre_stop_timeout=durations,
    hibernate_fallback=st.sampled_from([Action.STOP, Action.TERMINATE]),
    backstop=st.booleans(), backstop_after=durations, wall=st.booleans(), lifecycle=lifecycles,
)


@NO_DEADLINE
@given(configs)
@example(Config())
@example(Config(pre_stop_hook='/opt/hook "quoted" \\ back\tslash\n\x7f\U000e0001 é'))
def test_render_then_parse_gives_back_the_same_config(cfg: Config) -> None:
    text = render(cfg)
    tomllib.loads(text)  # valid TOML on its own
    assert parse(text) == cfg


def test_render_writes_only_what_differs_from_the_defaults() -> None:
    text = render(Config(tick=timedelta(seconds=45), dry_run=True,
                         lifecycle=Lifecycle(ttl=timedelta(hours=2))))
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert body == ["dry_run = true", 'tick = "45s"', "[lifecycle]", 'ttl = "2h"',
                    'on_complete = "terminate"']


def test_a_realistic_launch_config() -> None:
    cfg = parse('''
        imds_endpoint = "http://169.254.169.254"
        spot_poll = "2s"
        warn_at = ["1m", "10m", "5m"]
        backstop = true
        hibernate_fallback = "terminate"
        [lifecycle]
        ttl = "8h"
        expires_at = "2026-11-28T17:00:00Z"
        idle_timeout = "30m"
        on_complete = "stop"
    ''', source="spored.toml")
    assert cfg.spot_poll == timedelta(seconds=2)
    assert cfg.warn_at == (timedelta(minutes=10), timedelta(minutes=5), timedelta(minutes=1))
    assert cfg.backstop is True and cfg.hibernate_fallback is Action.TERMINATE
    assert cfg.lifecycle == Lifecycle(ttl=timedelta(hours=8),
                                      expires_at=datetime(2026, 11, 28, 17, tzinfo=UTC),
                                      idle_timeout=timedelta(minutes=30), on_complete=Action.STOP)
    assert cfg.tick == Config().tick  # untouched keys keep their defaults


@pytest.mark.parametrize(("text", "names"), [
    ("tik = \"10s\"", ["spored.toml: tik", "unknown key", "tick"]),
    ("[lifecycle]\nttl_ = \"1h\"", ["spored.toml: lifecycle.ttl_", "unknown key", "expires_at"]),
    ("[agent]\ntick = \"1s\"", ["spored.toml: agent", "unknown key"]),
    ("lifecycle = 5", ["spored.toml", "[lifecycle] must be a table"]),
    ("tick = 10", ["spored.toml: tick", "10", "must be a string"]),
    ("tick = \"10\"", ["spored.toml: tick", "'10'", "not a duration", "90s"]),
    ("tick = \"0s\"", ["spored.toml: tick", "'0s'", "positive"]),
    ("tick = \"400d\"", ["spored.toml: tick", "366 days"]),
    ("dry_run = \"yes\"", ["spored.toml: dry_run", "'yes'", "true or false"]),
    ("warn_at = \"5m\"", ["spored.toml: warn_at", "list of durations"]),
    ("warn_at = [\"5m\", 3]", ["spored.toml: warn_at", "must be a string"]),
    ("hibernate_fallback = \"hibernate\"", ["spored.toml: hibernate_fallback", "stop or terminate"]),
    ("hibernate_fallback = \"reboot\"", ["spored.toml: hibernate_fallback", "'reboot'",
                                         "terminate, stop or hibernate"]),
    ("[lifecycle]\nexpires_at = \"2026-11-28 17:00\"", ["lifecycle.expires_at", "UTC RFC 3339"]),
    ("[lifecycle]\non_complete = \"explode\"", ["lifecycle.on_complete", "'explode'"]),
    ("tick = ", ["spored.toml", "not valid TOML"]),
])
def test_bad_config_is_a_loud_config_error(text: str, names: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text, source="spored.toml")
    assert caught.value.exit_status is ExitStatus.USAGE
    for name in names:
        assert name in caught.value.message


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_drop_ins_apply_after_the_main_file_in_name_order(tmp_path: Path) -> None:
    main = _write(tmp_path / "spored.toml", 'tick = "10s"\nspot_poll = "3s"\n[lifecycle]\nttl = "1h"\n')
    _write(tmp_path / "spored.d" / "20-later.toml", 'tick = "40s"\n')
    _write(tmp_path / "spored.d" / "10-first.toml", 'tick = "20s"\ndry_run = true\n')
    _write(tmp_path / "spored.d" / "15-life.toml", '[lifecycle]\non_complete = "stop"\n')
    _write(tmp_path / "spored.d" / "99-ignored.conf", "this is not read")
    cfg = load(main)
    assert cfg.tick == timedelta(seconds=40)  # 20-later wins over 10-first and the main file
    assert cfg.dry_run is True and cfg.spot_poll == timedelta(seconds=3)
    assert cfg.lifecycle == Lifecycle(ttl=timedelta(hours=1), on_complete=Action.STOP)


def test_a_bad_drop_in_names_its_file(tmp_path: Path) -> None:
    main = _write(tmp_path / "spored.toml", 'tick = "10s"\n')
    bad = _write(tmp_path / "spored.d" / "50-bad.toml", 'tick = "soon"\n')
    with pytest.raises(ConfigError, match=str(bad)):
        load(main)


def test_missing_main_file(tmp_path: Path) -> None:
    main = tmp_path / "spored.toml"
    assert load(main) == Config()
    with pytest.raises(ConfigError, match="no such file"):
        load(main, required=True)
    _write(tmp_path / "spored.d" / "10-only.toml", "dry_run = true\n")
    assert load(main).dry_run is True


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    main = tmp_path / "spored.toml"
    main.mkdir()  # a directory where the file should be: reading it fails even as root
    with pytest.raises(ConfigError, match="cannot read"):
        load(main)
