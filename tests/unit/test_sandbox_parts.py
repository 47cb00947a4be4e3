"""The sandbox's pure parts: environments, the agent's configuration, the offline bundle."""

from __future__ import annotations

import hashlib
import json
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.sandbox import local_bundle
from controller.sandbox.agent import AgentDirs, changes, sandbox_config
from controller.sandbox.cloud import SANDBOX_ACCESS_KEY_ID, LocalCloud, scrubbed
from controller.sandbox.display import EVENTS
from spored import config as agent_config
from spored.contract import Action

USER_ENV = {
    "PATH": "/usr/bin", "HOME": "/home/me",
    "AWS_PROFILE": "prod", "AWS_ACCESS_KEY_ID": "AKIAREALREALREAL", "AWS_SECRET_ACCESS_KEY": "real",
    "AWS_SESSION_TOKEN": "tok", "AWS_ENDPOINT_URL": "https://example.invalid",
    "AWS_ENDPOINT_URL_EC2": "https://ec2.example.invalid", "AWS_ROLE_ARN": "arn:aws:iam::1:role/x",
    "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token",
}


def _cloud() -> LocalCloud:
    cloud = LocalCloud()
    cloud.url = "http://127.0.0.1:5999"  # as if started; nothing here talks to it
    return cloud


def test_scrubbed_drops_everything_pointing_at_real_credentials_or_endpoints() -> None:
    assert scrubbed(USER_ENV) == {"PATH": "/usr/bin", "HOME": "/home/me"}


def test_controller_env_points_only_at_the_local_cloud_with_fake_keys() -> None:
    env = _cloud().controller_env(USER_ENV)
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5999"
    assert env["AWS_ACCESS_KEY_ID"] == SANDBOX_ACCESS_KEY_ID
    assert "AWS_PROFILE" not in env and "AWS_ENDPOINT_URL_EC2" not in env
    assert "AWS_SESSION_TOKEN" not in env and "AWS_ROLE_ARN" not in env


def test_agent_env_has_no_static_credentials_only_the_metadata_service() -> None:
    env = _cloud().agent_env("http://127.0.0.1:6000", USER_ENV)
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL_EC2"} & set(env)
    assert env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] == "http://127.0.0.1:6000"
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5999"
    assert env["PATH"] == "/usr/bin"


LAUNCH_CONFIG = agent_config.render(agent_config.Config(
    backstop=True,
    lifecycle=agent_config.Lifecycle(ttl=timedelta(seconds=20),
                                     expires_at=datetime(2026, 11, 28, 4, 0, tzinfo=UTC),
                                     on_complete=Action.TERMINATE)))


@pytest.mark.parametrize("wall", [False, True])
def test_sandbox_config_never_arms_the_backstop_and_walls_only_when_asked(tmp_path: Path,
                                                                          wall: bool) -> None:
    dirs = AgentDirs(tmp_path)
    cfg = sandbox_config(LAUNCH_CONFIG, dirs, imds_url="http://127.0.0.1:6000",
                         ec2_endpoint="http://127.0.0.1:5999", wall=wall)
    assert cfg.backstop is False
    assert cfg.wall is wall
    assert cfg.completion_marker == str(tmp_path / "run" / "complete")
    assert cfg.imds_endpoint == "http://127.0.0.1:6000"
    assert cfg.warn_at == (timedelta(seconds=10), timedelta(seconds=5))
    # The lifecycle launch wrote is kept as it is.
    assert cfg.lifecycle == agent_config.parse(LAUNCH_CONFIG).lifecycle
    # What the agent will read back from the file is exactly this.
    assert agent_config.parse(agent_config.render(cfg)) == cfg


def test_changes_name_each_key_the_sandbox_changed(tmp_path: Path) -> None:
    cfg = sandbox_config(LAUNCH_CONFIG, AgentDirs(tmp_path), imds_url="http://127.0.0.1:6000",
                         ec2_endpoint="http://127.0.0.1:5999", wall=False)
    changed = changes(LAUNCH_CONFIG, cfg)
    assert changed["backstop"] == ("true", "false")
    assert changed["warn_at"] == ("10m,5m,1m", "10s,5s")
    assert "lifecycle" not in changed


def test_agent_dirs_are_private(tmp_path: Path) -> None:
    dirs = AgentDirs(tmp_path / "agent")
    dirs.create()
    for path in (dirs.state, dirs.runtime, dirs.config.parent):
        assert path.stat().st_mode & 0o077 == 0


def test_sandbox_bundle_is_reproducible_and_says_what_it_is(tmp_path: Path) -> None:
    first = local_bundle.build(tmp_path / "a")
    second = local_bundle.build(tmp_path / "b")
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(second.read_bytes()).hexdigest()
    with tarfile.open(first) as tar:
        names = tar.getnames()
        top = names[0]
        manifest_file = tar.extractfile(f"{top}/bundle.json")
        assert manifest_file is not None
        manifest = json.loads(manifest_file.read())
    assert manifest["kind"] == "sandbox"
    assert f"{top}/spored/cli.py" in names
    assert "spored/cli.py" in manifest["files"]


def test_every_event_is_described() -> None:
    assert all(EVENTS.values())
    assert {"instance-launched", "agent-ready", "terminate-call", "finished"} <= set(EVENTS)


def test_json_display_writes_one_object_per_event_on_stdout_only() -> None:
    import io

    from controller.output import Output
    from controller.sandbox.display import Display

    out, err = io.StringIO(), io.StringIO()
    with Display(Output(json=True, stdout=out, stderr=err)) as display:
        display.event("instance-launched", "for people", instance_id="i-1", message="kept")
        display.text("a block for people")
        display.status("a status line")
        with pytest.raises(ValueError, match="undeclared"):
            display.event("no-such-event", "x")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(records) == 1
    assert records[0]["event"] == "instance-launched"
    assert records[0]["instance_id"] == "i-1" and records[0]["message"] == "kept"
    assert isinstance(records[0]["t"], float)
    assert err.getvalue() == ""


def test_plain_display_writes_lines_for_people_on_stderr_only() -> None:
    import io

    from controller.output import Output
    from controller.sandbox.display import Display

    out, err = io.StringIO(), io.StringIO()
    with Display(Output(json=False, stdout=out, stderr=err), status_every=3600) as display:
        display.event("agent-ready", "agent ready: terminate at noon")
        display.status("first status")
        display.status("second status, within the interval: not printed")
    assert out.getvalue() == ""
    lines = err.getvalue().splitlines()
    assert lines[0].endswith("✓ agent ready: terminate at noon")
    assert lines[1].endswith("first status")
    assert len(lines) == 2
