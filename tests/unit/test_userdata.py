"""User-data rendering: agent first, the user's data exactly as given, nothing user-controlled in shell."""

from __future__ import annotations

import base64
import gzip
import os
import subprocess
from pathlib import Path

import pytest

from controller.launch import userdata
from spored import config as agent_config
from spored.errors import ValidationError

SHA = "a" * 64
BUNDLE = userdata.BundleRef("https://bucket.s3.amazonaws.com/spored-bundle/x/b.tar.gz?X-Amz-Signature=ab%2Fc&a=b",
                            SHA)
TOML = agent_config.render(agent_config.Config(backstop=True))


def test_agent_part_comes_first_and_user_part_is_byte_exact() -> None:
    mine = b"#!/bin/bash\necho 'hello $USER' \xe2\x9c\x93\n\n"
    rendered = userdata.render(BUNDLE, TOML, mine)
    parts = userdata.parts(rendered)
    assert [(ct, fn) for ct, fn, _ in parts] == [
        ("text/x-shellscript", "00-spored-install.sh"), ("text/x-shellscript", "50-user-data")]
    assert parts[1][2] == mine
    # cloud-init's scripts-user runs scripts in name order: the agent's sorts first.
    assert sorted([parts[0][1] or "", parts[1][1] or ""]) == ["00-spored-install.sh", "50-user-data"]


def test_cloud_config_user_data_keeps_its_type() -> None:
    parts = userdata.parts(userdata.render(BUNDLE, TOML, b"#cloud-config\npackages: [htop]\n"))
    assert parts[1][0] == "text/cloud-config"


def test_without_user_data_there_is_one_part() -> None:
    assert len(userdata.parts(userdata.render(BUNDLE, TOML, None))) == 1


def test_script_holds_only_encoded_values_and_the_config_round_trips() -> None:
    script = userdata.install_script(BUNDLE, TOML, failsafe_at=1_800_000_000)
    assert BUNDLE.url not in script  # the URL (with & and %) never appears raw in shell
    assert f"BUNDLE_SHA256='{SHA}'" in script
    config_b64 = script.split("CONFIG_B64='")[1].split("'")[0]
    url_b64 = script.split("BUNDLE_URL_B64='")[1].split("'")[0]
    assert base64.b64decode(config_b64).decode() == TOML
    assert base64.b64decode(url_b64).decode() == BUNDLE.url
    assert agent_config.parse(base64.b64decode(config_b64).decode()).backstop is True
    assert "FAILSAFE_AT='1800000000'" in script


def test_install_script_is_valid_posix_sh() -> None:
    script = userdata.install_script(BUNDLE, TOML)
    proc = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_script_verifies_sha_before_extracting_and_installs_before_anything_else() -> None:
    script = userdata.install_script(BUNDLE, TOML)
    assert script.index("sha256sum -c") < script.index("tar -xzf") < script.index('sh "$installer"')


@pytest.mark.parametrize("url", ["https://x/a b", "https://x/$(reboot)", "file:///etc/passwd",
                                 "https://x/a'b", "https://x/a`id`"])
def test_unsafe_bundle_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError):
        userdata.install_script(userdata.BundleRef(url, SHA), TOML)


def test_large_user_data_is_gzipped_under_the_limit() -> None:
    big = b"#!/bin/sh\n" + b"echo the same line again and again\n" * 600  # ~21 KB, compressible
    rendered = userdata.render(BUNDLE, TOML, big)
    assert rendered[:2] == b"\x1f\x8b" and len(rendered) <= userdata.EC2_USER_DATA_LIMIT
    assert userdata.parts(rendered)[1][2] == big
    assert gzip.decompress(rendered).startswith(b"Content-Type: multipart/mixed")


def test_incompressible_oversize_user_data_is_a_clear_error() -> None:
    noise = b"#!/bin/sh\n: " + base64.b64encode(os.urandom(20000))
    with pytest.raises(ValidationError) as err:
        userdata.render(BUNDLE, TOML, noise)
    assert err.value.field == "--user-data" and "16384" in err.value.message


@pytest.mark.parametrize(("data", "mime"), [
    (b"#!/usr/bin/env python3\nprint(1)\n", "text/x-shellscript"),
    (b"#cloud-boothook\n#!/bin/sh\n", "text/cloud-boothook"),
    (b"#include\nhttps://example.com/x\n", "text/x-include-url"),
])
def test_user_data_types(data: bytes, mime: str) -> None:
    assert userdata.user_data_type(data) == mime


@pytest.mark.parametrize("data", [b"echo hi\n", b"Content-Type: multipart/mixed\n", b"\x1f\x8b\x08rest"])
def test_user_data_cloud_init_would_ignore_is_refused(data: bytes) -> None:
    with pytest.raises(ValidationError) as err:
        userdata.user_data_type(data)
    assert err.value.field == "--user-data"


def test_the_failsafe_is_armed_before_any_download() -> None:
    script = userdata.install_script(BUNDLE, TOML, failsafe_at=1_800_000_000)
    arm = script.index(f'{userdata.FAILSAFE_HELPER_PATH} arm "$FAILSAFE_AT"')
    assert arm < script.index("curl ") and arm < script.index("base64 -d > /etc/spored")
    helper = base64.b64decode(script.split("FAILSAFE_B64='")[1].split("'")[0]).decode()
    assert helper == userdata.FAILSAFE_HELPER


@pytest.mark.parametrize("value", ["$(reboot)", -1, 12, 1.8e9, True])
def test_the_failsafe_time_must_be_epoch_seconds(value: object) -> None:
    with pytest.raises(ValueError, match="failsafe_at"):
        userdata.install_script(BUNDLE, TOML, failsafe_at=value)  # type: ignore[arg-type]


@pytest.fixture
def helper(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """The failsafe helper with systemd-run/systemctl/shutdown replaced by recorders."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls"
    for name in ("systemd-run", "systemctl", "shutdown"):
        stub = bindir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\n')
        stub.chmod(0o755)
    script = tmp_path / "spawn-failsafe"
    script.write_text(userdata.FAILSAFE_HELPER.replace("/run/spored/failsafe", str(tmp_path / "request")))
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "LANG": "C"}
    return script, calls, env


def test_failsafe_helper_arms_a_transient_timer_at_the_time_given(
        helper: tuple[Path, Path, dict[str, str]]) -> None:
    script, calls, env = helper
    proc = subprocess.run(["sh", str(script), "arm", "1800000000"], env=env, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    run = [line for line in calls.read_text().splitlines() if line.startswith("systemd-run")]
    assert run == ["systemd-run --quiet --unit=spawn-failsafe --on-calendar=2027-01-15 08:00:00 UTC "
                   "--timer-property=AccuracySec=1s --description=spawn failsafe: power off unless "
                   f"spored moves it /bin/sh -c /bin/sh {script} fire || systemctl poweroff"]
    assert "power-off armed for 2027-01-15 08:00:00 UTC" in proc.stdout


def test_failsafe_helper_refuses_a_request_not_written_by_spored(
        helper: tuple[Path, Path, dict[str, str]], tmp_path: Path) -> None:
    script, calls, env = helper
    (tmp_path / "request").write_text("1800000000\n")  # owned by the test's user, not spored
    proc = subprocess.run(["sh", str(script), "rearm"], env=env, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 1 and "not a regular file of user spored" in proc.stderr
    assert not calls.exists()


@pytest.mark.parametrize("argv", [["arm", "$(id)"], ["arm", ""], ["arm", "12h"], ["bogus"]])
def test_failsafe_helper_refuses_anything_but_digits(helper: tuple[Path, Path, dict[str, str]],
                                                     argv: list[str]) -> None:
    script, calls, env = helper
    proc = subprocess.run(["sh", str(script), *argv], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert not calls.exists()


def test_failsafe_fire_powers_off_at_once_without_a_running_agent(
        helper: tuple[Path, Path, dict[str, str]]) -> None:
    script, calls, env = helper
    (script.parent / "bin" / "systemctl").write_text(
        f'#!/bin/sh\necho "systemctl $*" >> "{calls}"\n[ "$1" != is-active ]\n')
    proc = subprocess.run(["sh", str(script), "fire"], env=env, capture_output=True, text=True,
                          check=False, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert calls.read_text().splitlines() == ["systemctl is-active --quiet spored.service",
                                              "systemctl poweroff"]
