"""The defaults file (~/.config/spawn/config.toml): precedence flag > environment > file > built-in,
validated like the flags (exit 2 naming the file, the key and what is accepted)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from controller import defaults
from controller.cli import build_parser, main
from spored.errors import ValidationError

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq2lNH3Xk7GZqj0m8r2vJ0eP7Wq7l1v3yJd0QmFvYtB me@laptop"


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "SPAWN_AGENT_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "xdg" / "spawn").mkdir(parents=True)
    return tmp_path / "xdg" / "spawn" / "config.toml"


def launch_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["launch", "-t", "t3.micro", *argv])


def test_the_file_lives_under_xdg_config_home(config_home: Path) -> None:
    assert defaults.path() == config_home
    assert defaults.load() == {}


def test_file_values_fill_flags_not_given(config_home: Path, tmp_path: Path) -> None:
    key = tmp_path / "id.pub"
    key.write_text(ED25519 + "\n")
    config_home.write_text(f'region = "eu-west-1"\nttl = "4h"\nidle-timeout = "30m"\nssh-key = "{key}"\n'
                           'ssh-from = ["203.0.113.7/32", "198.51.100.0/24"]\n'
                           'iam-policy = ["s3:ReadOnly@my-bucket", "sqs:ReadOnly"]\n')
    args = launch_args()
    sources = defaults.apply(args)
    assert (args.region, args.ttl, args.idle_timeout, args.ssh_key) == ("eu-west-1", "4h", "30m", str(key))
    assert args.ssh_from == ["203.0.113.7/32", "198.51.100.0/24"]
    assert args.iam_policy == "s3:ReadOnly@my-bucket,sqs:ReadOnly"
    assert sources["region"] == "file" and sources["agent-bundle"] == "built-in"


def test_a_flag_wins_over_the_file(config_home: Path) -> None:
    config_home.write_text('region = "eu-west-1"\nttl = "4h"\nssh-from = "203.0.113.7/32"\n')
    args = launch_args("--region", "us-east-2", "--ttl", "1h", "--ssh-from", "192.0.2.1/32")
    sources = defaults.apply(args)
    assert (args.region, args.ttl, args.ssh_from) == ("us-east-2", "1h", ["192.0.2.1/32"])
    assert sources["region"] == sources["ttl"] == sources["ssh-from"] == "flag"


def test_the_environment_wins_over_the_file(config_home: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    file_bundle, env_bundle = tmp_path / "file.tar.gz", tmp_path / "env.tar.gz"
    file_bundle.write_bytes(b"x")
    env_bundle.write_bytes(b"y")
    config_home.write_text(f'region = "eu-west-1"\nagent-bundle = "{file_bundle}"\n')
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    monkeypatch.setenv("SPAWN_AGENT_BUNDLE", str(env_bundle))
    args = launch_args()
    sources = defaults.apply(args)
    assert args.region is None  # boto3 reads AWS_REGION itself
    assert args.agent_bundle == str(env_bundle)
    assert sources["region"] == sources["agent-bundle"] == "environment"


def test_no_timeout_drops_the_file_timeouts(config_home: Path) -> None:
    config_home.write_text('ttl = "4h"\nidle-timeout = "30m"\n')
    args = launch_args("--no-timeout")
    defaults.apply(args)
    assert args.ttl is None and args.idle_timeout is None


@pytest.mark.parametrize(("body", "key", "accepted"), [
    ('ttl = "soon"\n', "ttl", "a duration"),
    ("ttl = 5\n", "ttl", "a duration"),
    ('region = "Mars-1"\n', "region", "a region name"),
    ('ssh-from = ["10.0.0.1/33"]\n', "ssh-from", "CIDR"),
    ('iam-policy = "nosuch:Thing"\n', "iam-policy", "template"),
    ('agent-bundle = "/no/such/bundle.tar.gz"\n', "agent-bundle", "bundle file"),
    ('colour = "blue"\n', "colour", "accepted: region, ssh-key"),
])
def test_a_bad_file_names_the_file_the_key_and_what_is_accepted(config_home: Path, body: str, key: str,
                                                                 accepted: str) -> None:
    config_home.write_text(body)
    with pytest.raises(ValidationError) as info:
        defaults.load()
    assert info.value.field == f"{config_home}: {key}"
    assert accepted in info.value.message


def test_launch_with_a_bad_file_exits_2_before_any_aws_call(config_home: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    config_home.write_text('idle-timeout = "forever"\n')
    assert main(["launch", "-t", "t3.micro", "--dry-run", "--json"]) == 2
    error = json.loads(capsys.readouterr().out)
    assert error["error"] == "validation" and f"{config_home}: idle-timeout" in error["message"]


def test_not_toml_is_an_error(config_home: Path) -> None:
    config_home.write_text("ttl: 4h\n")
    with pytest.raises(ValidationError, match="not valid TOML"):
        defaults.load()


def test_defaults_show_reports_each_source(config_home: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    config_home.write_text('ttl = "4h"\n')
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-north-1")
    assert main(["defaults", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["path"] == str(config_home) and shown["exists"] is True
    assert shown["keys"]["ttl"] == {"value": "4h", "source": "file", "flag": "--ttl", "env": []}
    assert shown["keys"]["region"]["source"] == "environment"
    assert shown["keys"]["region"]["value"] == "eu-north-1"
    assert shown["keys"]["idle-timeout"]["source"] == "built-in"
