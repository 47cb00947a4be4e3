"""The agent bundle, built for real, and install.sh run for real into a staging root.

The bundle is built from this installation (the ``spored`` package and the package data in
``controller/bundle_files``) with pip, into the user's real bundle cache. install.sh runs with
SPORED_ROOT pointing at a temporary root that holds a minimal /etc (passwd, group, shadow,
gshadow): the venv, the offline install, the user and group, the units and their enablement all
happen there. Starting the unit under a real systemd is the e2e tier's job. useradd/groupadd need
root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller import bundle as bundle_mod

# One bundle built for the module (a module-scoped fixture): its tests stay on one xdist worker.
pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="useradd/groupadd need root"),
              pytest.mark.xdist_group("test_install_script")]


@pytest.fixture(scope="module")
def built() -> Iterator[tuple[Path, bundle_mod.Bundle]]:
    yield Path(), bundle_mod.ensure_bundle()


@pytest.fixture
def extracted(built: tuple[Path, bundle_mod.Bundle], tmp_path: Path) -> Path:
    with tarfile.open(built[1].path) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    return tmp_path / "x" / f"spored-bundle-{built[1].version}"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A staging root with the /etc files useradd and groupadd edit, and an image user."""
    etc = tmp_path / "root" / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                "ec2-user:x:1000:1000::/home/ec2-user:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\ntty:x:5:\nec2-user:x:1000:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\nec2-user:!:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\ntty:*::\nec2-user:!::\n")
    for name in ("shadow", "gshadow"):
        (etc / name).chmod(0o600)
    return tmp_path / "root"


def install(args: list[str], root: Path, script: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "SPORED_ROOT": str(root), "HOME": str(root)}
    return subprocess.run(["sh", str(script), *args], capture_output=True, text=True, env=env,
                          timeout=240, check=False)


def test_bundle_holds_one_pure_python_wheelhouse(extracted: Path) -> None:
    wheels = sorted(p.name for p in (extracted / "wheelhouse").glob("*.whl"))
    assert all(w.endswith("-none-any.whl") for w in wheels), wheels
    names = {bundle_mod.wheel_name_version(w)[0] for w in wheels}
    assert {"spored", "boto3", "botocore", "requests", "structlog", "apscheduler", "pip"} <= names
    assert not names & {"spawn-spored", "rich", "moto", "shtab"}
    assert (extracted / "install.sh").stat().st_mode & 0o111


def test_install_creates_venv_user_units_and_is_idempotent(extracted: Path, root: Path) -> None:
    first = install([], root, extracted / "install.sh")
    assert first.returncode == 0, first.stderr
    spored = root / "opt/spored/venv/bin/spored"
    run = subprocess.run([str(spored), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert os.readlink(root / "usr/local/bin/spored") == "/opt/spored/venv/bin/spored"
    units = root / "etc/systemd/system"
    for unit in ("spored.service", "spored-poweroff.path", "spored-poweroff.service", "spored-failsafe.path",
                 "spored-failsafe.service", "spored-failed.timer", "spored-failed.service"):
        assert (units / unit).read_text() == (extracted / "systemd" / unit).read_text()
    wants = units / "multi-user.target.wants"
    assert sorted(p.name for p in wants.iterdir()) == ["spored-failsafe.path", "spored-poweroff.path",
                                                       "spored.service"]
    passwd = (root / "etc/passwd").read_text()
    group = (root / "etc/group").read_text()
    spored_user = [line for line in passwd.splitlines() if line.startswith("spored:")]
    assert len(spored_user) == 1
    assert ":/var/lib/spored:" in spored_user[0] and spored_user[0].endswith("/nologin")
    assert next(line for line in group.splitlines() if line.startswith("spored:")).endswith(":ec2-user")
    assert "not started" in first.stderr

    second = install([], root, extracted / "install.sh")
    assert second.returncode == 0, second.stderr
    assert "already installed" in second.stderr
    assert (root / "etc/passwd").read_text() == passwd
    assert (root / "etc/group").read_text() == group
    assert sorted(p.name for p in wants.iterdir()) == ["spored-failsafe.path", "spored-poweroff.path",
                                                       "spored.service"]
    run = subprocess.run([str(spored), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr


def test_sha256_mode_refuses_a_tarball_that_does_not_match(built: tuple[Path, bundle_mod.Bundle],
                                                           extracted: Path, root: Path) -> None:
    wrong = "0" * 64
    proc = install(["--sha256", wrong, "--bundle", str(built[1].path)], root, extracted / "install.sh")
    assert proc.returncode != 0
    assert "does not match" in proc.stderr
    assert not (root / "opt/spored/venv").exists()
    assert not (root / "etc/systemd/system/spored.service").exists()


def test_sha256_mode_verifies_extracts_and_installs(built: tuple[Path, bundle_mod.Bundle],
                                                    extracted: Path, root: Path) -> None:
    proc = install(["--sha256", built[1].sha256.upper(), "--bundle", str(built[1].path)], root,
                   extracted / "install.sh")
    assert proc.returncode == 0, proc.stderr
    assert "sha256 verified" in proc.stderr
    assert (root / "opt/spored/venv/bin/spored").exists()
    assert (root / "etc/systemd/system/spored.service").exists()
    assert not list((root / "opt/spored").glob(".bundle.*"))  # the extracted copy is removed


def test_install_refuses_a_directory_that_is_not_a_bundle(extracted: Path, root: Path,
                                                          tmp_path: Path) -> None:
    proc = install([str(tmp_path)], root, extracted / "install.sh")
    assert proc.returncode != 0
    assert "no wheelhouse" in proc.stderr


def test_a_new_bundle_gets_a_fresh_venv_and_the_old_one_goes(extracted: Path, root: Path,
                                                               tmp_path: Path) -> None:
    assert install([], root, extracted / "install.sh").returncode == 0
    first = os.readlink(root / "opt/spored/venv")
    newer = tmp_path / "newer"
    shutil.copytree(extracted, newer)
    manifest = newer / "bundle.json"
    manifest.write_text(manifest.read_text().replace('"name"', '"name" ', 1))  # other content
    proc = install([], root, newer / "install.sh")
    assert proc.returncode == 0, proc.stderr
    second = os.readlink(root / "opt/spored/venv")
    assert second != first
    assert sorted(p.name for p in (root / "opt/spored/venvs").iterdir()) == [Path(second).name]
    run = subprocess.run([str(root / "opt/spored/venv/bin/spored"), "--help"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr


def test_install_refuses_a_python_the_bundle_has_no_wheels_for(extracted: Path, root: Path) -> None:
    proc = install(["--python", "/bin/sh"], root, extracted / "install.sh")
    assert proc.returncode != 0
    assert "--python /bin/sh: not a Python >= 3.11" in proc.stderr
    assert not (root / "opt/spored/venvs").exists()
