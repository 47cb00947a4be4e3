"""`spawn launch` flag validation: defaults, conflicts and every refusal names its flag."""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path

import pytest

from controller.launch import launch_flags
from spored.contract import Action
from spored.errors import ValidationError

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq2lNH3Xk7GZqj0m8r2vJ0eP7Wq7l1v3yJd0QmFvYtB me@host"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    launch_flags.add_arguments(parser)
    return parser.parse_args(["--instance-type", "t3.micro", *argv])


def validate(*argv: str, home: Path) -> launch_flags.LaunchFlags:
    return launch_flags.validate(parse(*argv), home=home)


def test_defaults_apply_a_one_hour_idle_timeout_and_a_fresh_client_token(tmp_path: Path) -> None:
    a = validate(home=tmp_path)
    b = validate(home=tmp_path)
    assert a.idle_timeout == timedelta(hours=1) and a.timeout_defaulted
    assert a.ttl is None and a.on_complete is Action.TERMINATE
    assert a.client_token != b.client_token and a.client_token.startswith("spawn-")
    assert a.ssh_public_key is None and a.ssh_from == ()  # no key found: no SSH ingress at all


def test_no_timeout_allows_neither(tmp_path: Path) -> None:
    f = validate("--no-timeout", home=tmp_path)
    assert f.ttl is None and f.idle_timeout is None and not f.timeout_defaulted


def test_default_key_from_home_prefers_ed25519_and_asks_for_the_callers_own_address(tmp_path: Path) -> None:
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa.pub").write_text("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 x\n")
    (tmp_path / ".ssh" / "id_ed25519.pub").write_text(ED25519 + "\n")
    f = validate("--ttl", "2h", home=tmp_path)
    assert f.ssh_public_key == " ".join(ED25519.split()[:2])
    assert f.ssh_from == () and f.ssh_from_lookup  # never 0.0.0.0/0 by default
    assert not launch_flags.open_to_everyone(f)


def test_ssh_key_path_to_private_key_reads_the_pub_beside_it(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("PRIVATE")
    (tmp_path / "k.pub").write_text(ED25519)
    f = validate("--ssh-key", str(tmp_path / "k"), "--ssh-from", "203.0.113.7/32", home=tmp_path)
    assert f.ssh_public_key and f.ssh_public_key.startswith("ssh-ed25519 ")
    assert f.ssh_from == ("203.0.113.7/32",) and not f.ssh_from_lookup


@pytest.mark.parametrize("everyone", ["0.0.0.0/0", "::/0"])
def test_ssh_to_everyone_only_when_asked(everyone: str, tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_text(ED25519)
    f = validate("--ssh-key", str(tmp_path / "k.pub"), "--ssh-from", everyone, home=tmp_path)
    assert f.ssh_from == (everyone,) and not f.ssh_from_lookup and launch_flags.open_to_everyone(f)


def test_on_complete_hibernate_configures_hibernation(tmp_path: Path) -> None:
    f = validate("--on-complete", "hibernate", "--ttl", "1h", home=tmp_path)
    assert f.hibernation_configured


@pytest.mark.parametrize(("argv", "flag"), [
    (["--ttl", "1x"], "--ttl"),
    (["--ttl", "0s"], "--ttl"),
    (["--idle-timeout", "forever"], "--idle-timeout"),
    (["--no-timeout", "--ttl", "1h"], "--no-timeout"),
    (["--on-complete", "explode"], "--on-complete"),
    (["--spot", "--on-complete", "stop"], "--on-complete"),
    (["--spot", "--hibernate"], "--hibernate"),
    (["--spot-max-price", "0.1"], "--spot-max-price"),
    (["--spot", "--spot-max-price", "-1"], "--spot-max-price"),
    (["--count", "0"], "--count"),
    (["--count", "many"], "--count"),
    (["--imds-hop-limit", "65"], "--imds-hop-limit"),
    (["--region", "moon-1"], "--region"),
    (["--ami", "ami-xyz"], "--ami"),
    (["--name", "a;rm -rf /"], "--name"),
    (["--subnet", "subnet-zz"], "--subnet"),
    (["--security-group", "default"], "--security-group"),
    (["--ssh-from", "10.0.0.1/8"], "--ssh-from"),
    (["--ssh-from", "everywhere"], "--ssh-from"),
    (["--client-token", "has space"], "--client-token"),
    (["--agent-bundle", "ftp://example.com/b.tgz"], "--agent-bundle"),
    (["--agent-bundle", "https://example.com/b.tgz;reboot"], "--agent-bundle"),
    (["--agent-bundle", "http://example.com/b.tgz"], "--agent-bundle"),
    (["--agent-bundle", "HTTP://example.com/b.tgz"], "--agent-bundle"),
    (["--agent-bundle", "/nonexistent/bundle.tar.gz"], "--agent-bundle"),
    (["--user-data", "/nonexistent/script.sh"], "--user-data"),
    (["--ssh-key", "/nonexistent/key.pub"], "--ssh-key"),
    (["--key-name", "mine", "--ssh-key", "/x.pub"], "--ssh-key"),
    (["--agent-wait", "soon"], "--agent-wait"),
])
def test_bad_input_names_the_flag(argv: list[str], flag: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as err:
        validate(*argv, home=tmp_path)
    assert err.value.field == flag
    assert err.value.exit_status == 2


def test_bad_instance_type_syntax(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    launch_flags.add_arguments(parser)
    with pytest.raises(ValidationError) as err:
        launch_flags.validate(parser.parse_args(["--instance-type", "T3 MICRO"]), home=tmp_path)
    assert err.value.field == "--instance-type"


def test_ssh_key_that_is_not_a_public_key(tmp_path: Path) -> None:
    (tmp_path / "junk.pub").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    with pytest.raises(ValidationError, match="not an OpenSSH public key"):
        validate("--ssh-key", str(tmp_path / "junk.pub"), home=tmp_path)


def test_plain_http_bundle_is_refused_with_the_reason(tmp_path: Path) -> None:
    """The bundle runs as root with the instance's role: whoever is on an http path could swap it."""
    with pytest.raises(ValidationError, match="plain http is refused") as err:
        validate("--agent-bundle", "http://mirror.example.com/spored-bundle.tar.gz", home=tmp_path)
    assert err.value.field == "--agent-bundle" and err.value.exit_status == 2
    ok = validate("--agent-bundle", "https://mirror.example.com/spored-bundle.tar.gz", home=tmp_path)
    assert ok.agent_bundle == "https://mirror.example.com/spored-bundle.tar.gz"


def test_the_sandbox_launch_never_looks_up_an_address(tmp_path: Path) -> None:
    """`spawn sandbox` runs offline: even with a key in ~/.ssh its launch asks no lookup service."""
    from datetime import timedelta

    from controller.sandbox import launcher

    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_ed25519.pub").write_text(ED25519 + "\n")
    argv = launcher.launch_argv(instance_type="t3.micro", ttl=timedelta(seconds=20), idle_timeout=None,
                                spot=False, agent_bundle=str(tmp_path / ".ssh" / "id_ed25519.pub"))
    f = validate(*[a for a in argv[3:] if a != "--json"], home=tmp_path)
    assert f.ssh_public_key and not f.ssh_from_lookup and f.ssh_from == (launcher.SANDBOX_SSH_FROM,)
