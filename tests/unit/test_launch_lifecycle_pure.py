"""Pure pieces of the lifecycle commands: deadlines, extend arithmetic, config values, ssh argv."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.lifecycle import connect, extend, tag_config, view
from spored.errors import ValidationError

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def inst(tags: dict[str, str], state: str = "running", launched: datetime = NOW) -> dict[str, object]:
    return {"InstanceId": "i-0123456789abcdef0", "State": {"Name": state}, "LaunchTime": launched,
            "InstanceType": "t3.micro", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}


def test_expires_at_wins_over_ttl() -> None:
    d = view.deadline_of(inst({"spawn:ttl": "1h", "spawn:expires-at": "2026-11-28T20:00:00Z"}))
    assert d.at == datetime(2026, 11, 28, 20, tzinfo=UTC) and d.source == "spawn:expires-at"


def test_ttl_counts_from_launch_time() -> None:
    d = view.deadline_of(inst({"spawn:ttl": "90m"}, launched=NOW - timedelta(minutes=30)))
    assert d.at == NOW + timedelta(hours=1)


def test_stopped_with_remaining_is_paused_and_invalid_tags_are_reported() -> None:
    assert view.deadline_of(inst({"spawn:ttl-remaining": "2h"}, state="stopped")).source == "paused"
    assert view.deadline_of(inst({"spawn:expires-at": "tomorrow"})).source.startswith("invalid")
    assert view.deadline_of(inst({})).at is None


def test_list_row_shows_time_left_and_agent_health() -> None:
    r = view.row(inst({"spawn:managed": "true", "Name": "w", "spawn:expires-at": "2026-11-28T13:30:00Z",
                       "spawn:agent-status": "ok 2026-11-28T11:59:00Z"}), "eu-west-1", NOW)
    assert (r["name"], r["time_left"], r["agent"], r["region"]) == \
        ("w", "1h30m", "ok 2026-11-28T11:59:00Z", "eu-west-1")


@pytest.mark.parametrize(("current", "spec", "expected"), [
    (NOW + timedelta(hours=1), "+2h", NOW + timedelta(hours=3)),
    (NOW + timedelta(hours=1), "4h", NOW + timedelta(hours=4)),
    (None, "+30m", NOW + timedelta(minutes=30)),
    (NOW - timedelta(hours=1), "+90m", NOW + timedelta(minutes=30)),
])
def test_new_deadline(current: datetime | None, spec: str, expected: datetime) -> None:
    assert extend.new_deadline(current, NOW, spec) == expected


@pytest.mark.parametrize("spec", ["+", "2", "-1h", "+1d2", "soon"])
def test_bad_extension(spec: str) -> None:
    with pytest.raises(ValidationError) as err:
        extend.new_deadline(NOW, NOW, spec)
    assert err.value.field == "DURATION"


def test_extension_into_the_past_is_refused() -> None:
    with pytest.raises(ValidationError, match="already past"):
        extend.new_deadline(NOW - timedelta(hours=3), NOW, "+1h")


def test_paused_remaining_arithmetic() -> None:
    assert extend.new_remaining(timedelta(hours=1), "+30m") == timedelta(minutes=90)
    assert extend.new_remaining(timedelta(hours=1), "15m") == timedelta(minutes=15)


@pytest.mark.parametrize(("key", "value", "canonical"), [
    ("spawn:ttl", "90m", "1h30m"), ("spawn:idle-timeout", "3600s", "1h"),
    ("spawn:on-complete", "STOP", "stop"), ("spawn:idle-cpu-percent", "7.5", "7.5"),
    ("spawn:idle-net-bytes-per-sec", "2048", "2048"),
    ("spawn:expires-at", "2026-11-28T17:00:00Z", "2026-11-28T17:00:00Z"),
])
def test_config_values_are_canonical(key: str, value: str, canonical: str) -> None:
    assert tag_config.canonical_value(key, value) == canonical


@pytest.mark.parametrize(("key", "value"), [
    ("spawn:ttl", "1x"), ("spawn:on-idle", "reboot"), ("spawn:idle-cpu-percent", "101"),
    ("spawn:idle-disk-bytes-per-sec", "-5"), ("spawn:expires-at", "2026-11-28 17:00"),
])
def test_config_bad_values(key: str, value: str) -> None:
    with pytest.raises(ValidationError) as err:
        tag_config.canonical_value(key, value)
    assert err.value.field == key


def test_config_refuses_an_expires_at_beyond_366_days() -> None:
    now = datetime(2026, 11, 28, 12, tzinfo=UTC)
    got = tag_config.canonical_value("spawn:expires-at", "2027-11-29T12:00:00Z", now)
    assert got == "2027-11-29T12:00:00Z"
    with pytest.raises(ValidationError) as err:
        tag_config.canonical_value("spawn:expires-at", "3000-01-01T00:00:00Z", now)
    assert err.value.field == "spawn:expires-at"
    assert "366 days" in err.value.message and "2027-11-29T12:00:00Z" in err.value.message


def test_config_keys_accept_short_names_and_refuse_others() -> None:
    assert tag_config.normalize_key("ttl") == "spawn:ttl"
    with pytest.raises(ValidationError, match="accepted: ttl"):
        tag_config.normalize_key("spawn:managed")


CONSOLE = """[   12.0] cloud-init[1234]: ...
ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----
ec2: 256 SHA256:abc root@ip (ED25519)
ec2: -----END SSH HOST KEY FINGERPRINTS-----
-----BEGIN SSH HOST KEY KEYS-----
ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAI root@ip-10-0-0-1
ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq2lNH3Xk7GZqj0m8r2vJ0eP7Wq7l1v3yJd0QmFvYtB root@ip-10-0-0-1
-----END SSH HOST KEY KEYS-----
"""


def test_host_keys_are_parsed_from_console_output() -> None:
    assert connect.parse_host_keys(CONSOLE) == [
        ("ecdsa-sha2-nistp256", "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAI"),
        ("ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5AAAAIGq2lNH3Xk7GZqj0m8r2vJ0eP7Wq7l1v3yJd0QmFvYtB")]
    assert connect.parse_host_keys("no keys here") == []


def test_ssh_command_never_disables_host_key_checking(tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    strict = connect.ssh_command(user="ec2-user", address="198.51.100.4", alias="i-1", known_hosts=kh,
                                 verified=True, identity="~/.ssh/id", extra=["uptime"])
    tofu = connect.ssh_command(user="ubuntu", address="198.51.100.4", alias="i-1", known_hosts=kh,
                               verified=False)
    assert "StrictHostKeyChecking=yes" in strict and "StrictHostKeyChecking=accept-new" in tofu
    assert not any("StrictHostKeyChecking=no" in a for a in strict + tofu)
    assert f"UserKnownHostsFile={kh}" in strict and "HostKeyAlias=i-1" in strict
    assert strict[-3:] == ["ec2-user@198.51.100.4", "--", "uptime"]


def test_recorded_host_keys_replace_only_that_instance(tmp_path: Path) -> None:
    kh = tmp_path / "spawn" / "known_hosts"
    connect.record_host_keys(kh, "i-1", [("ssh-ed25519", "AAAA1")])
    connect.record_host_keys(kh, "i-2", [("ssh-ed25519", "AAAA2")])
    connect.record_host_keys(kh, "i-1", [("ssh-ed25519", "AAAA3")])
    assert kh.read_text().splitlines() == ["i-2 ssh-ed25519 AAAA2", "i-1 ssh-ed25519 AAAA3"]
    assert kh.stat().st_mode & 0o777 == 0o600


def test_login_user_by_image() -> None:
    from controller.launch.ami import login_user

    assert login_user("al2023-ami-2023.6 x86_64") == "ec2-user"
    assert login_user("ubuntu/images/hvm-ssd/ubuntu-noble-24.04") == "ubuntu"
    assert login_user("debian-12-amd64") == "admin"


@pytest.mark.parametrize(("answer", "confirmed"),
                         [("y\n", True), ("yes\n", True), ("n\n", False), ("\n", False)])
def test_terminate_asks_on_a_terminal(answer: str, confirmed: bool,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import os

    from controller.commands.lifecycle import _confirm
    from spored.errors import UsageError

    master, slave = os.openpty()
    with os.fdopen(slave, "r") as tty:
        os.write(master, answer.encode())
        if confirmed:
            _confirm("terminate i-1?", assume_yes=False, stdin=tty)
        else:
            with pytest.raises(UsageError, match="not confirmed"):
                _confirm("terminate i-1?", assume_yes=False, stdin=tty)
    os.close(master)
    assert "terminate i-1? [y/N]" in capsys.readouterr().err


def test_scanned_keys_are_kept_only_when_the_console_vouches_for_them() -> None:
    good = "AAAAC3NzaC1lZDI1NTE5AAAAIGq2lNH3Xk7GZqj0m8r2vJ0eP7Wq7l1v3yJd0QmFvYtB"
    other = "AAAAC3NzaC1lZDI1NTE5AAAAIHq2lNH3Xk7GZqj0m8r2vJ0eP7Wq7l1v3yJd0QmFvYtB"
    fp = connect.fingerprint(good)
    console = ("ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
               f"ec2: 256 SHA256:{fp} root@ip-10-0-0-1 (ED25519)\n"
               "ec2: -----END SSH HOST KEY FINGERPRINTS-----\n")
    assert connect.parse_fingerprints(console) == {fp}
    scanned = f"# 198.51.100.4:22 SSH-2.0-OpenSSH_8.7\n198.51.100.4 ssh-ed25519 {good}\n" \
              f"198.51.100.4 ssh-ed25519 {other}\n"
    assert connect.matching_keys(scanned, {fp}) == [("ssh-ed25519", good)]
    assert connect.matching_keys(scanned, {"nope"}) == []


@pytest.mark.parametrize(("seconds_left", "warned"), [(60, False), (10, False), (9, True), (0.5, True),
                                                      (-30, True)])
def test_extend_warns_when_the_moved_deadline_is_seconds_away(seconds_left: float, warned: bool) -> None:
    now = datetime(2026, 11, 28, 12, tzinfo=UTC)
    warning = extend.late_warning(now + timedelta(seconds=seconds_left), now)
    assert (warning is not None) is warned
    if warning:
        assert "may already have acted" in warning
    assert extend.late_warning(None, now) is None
