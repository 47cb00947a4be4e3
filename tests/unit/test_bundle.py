"""The bundle's tarball writer and inputs: deterministic bytes, the archive a user extracts."""

from __future__ import annotations

import gzip
import hashlib
import tarfile
import zipfile
from pathlib import Path

import pytest

from controller import bundle
from spored.errors import ValidationError


def _sources(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "src"
    src.mkdir()
    files = {}
    for name, body in (("install.sh", "#!/bin/sh\necho hi\n"), ("wheelhouse/b.whl", "b"),
                       ("wheelhouse/a.whl", "a"), ("systemd/spored.service", "[Service]\n")):
        path = src / name.replace("/", "_")
        path.write_text(body)
        path.chmod(0o600)  # the archive's modes must not depend on the checkout's
        files[name] = path
    return files


def test_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    files = _sources(tmp_path)
    one, two = tmp_path / "one.tar.gz", tmp_path / "two.tar.gz"
    bundle.write_tarball(files, one, top="b-1", epoch=1_700_000_000, executables=frozenset({"install.sh"}))
    for path in files.values():  # touching the sources changes nothing
        path.touch()
    bundle.write_tarball(dict(reversed(files.items())), two, top="b-1", epoch=1_700_000_000,
                         executables=frozenset({"install.sh"}))
    assert hashlib.sha256(one.read_bytes()).digest() == hashlib.sha256(two.read_bytes()).digest()


def test_a_different_epoch_changes_the_bytes(tmp_path: Path) -> None:
    files = _sources(tmp_path)
    one, two = tmp_path / "one.tar.gz", tmp_path / "two.tar.gz"
    bundle.write_tarball(files, one, top="b-1", epoch=1_700_000_000)
    bundle.write_tarball(files, two, top="b-1", epoch=1_700_000_001)
    assert one.read_bytes() != two.read_bytes()


def test_archive_is_sorted_owned_by_root_with_fixed_times(tmp_path: Path) -> None:
    target = tmp_path / "b.tar.gz"
    bundle.write_tarball(_sources(tmp_path), target, top="b-1", epoch=1_700_000_000,
                         executables=frozenset({"install.sh"}))
    with tarfile.open(target) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names == ["b-1", "b-1/install.sh", "b-1/systemd", "b-1/systemd/spored.service",
                     "b-1/wheelhouse", "b-1/wheelhouse/a.whl", "b-1/wheelhouse/b.whl"]
    assert {(m.uid, m.gid, m.mtime) for m in members} == {(0, 0, 1_700_000_000)}
    assert all(not m.pax_headers for m in members)
    modes = {m.name: m.mode for m in members}
    assert modes["b-1/install.sh"] == 0o755
    assert modes["b-1/wheelhouse/a.whl"] == 0o644
    assert modes["b-1/systemd"] == 0o755


def test_gzip_header_has_no_name_and_no_time(tmp_path: Path) -> None:
    target = tmp_path / "b.tar.gz"
    bundle.write_tarball(_sources(tmp_path), target, top="b-1", epoch=1_700_000_000)
    header = target.read_bytes()[:10]
    assert header[:2] == b"\x1f\x8b"
    assert header[3] & 0x08 == 0  # FNAME flag: no file name stored
    assert header[4:8] == b"\x00\x00\x00\x00"  # MTIME
    assert gzip.decompress(target.read_bytes())  # and it is a valid stream


@pytest.mark.parametrize(("given", "expected"), [("x86_64", "x86_64"), ("amd64", "x86_64"),
                                                  ("arm64", "aarch64"), ("aarch64", "aarch64")])
def test_architectures_follow_ec2_and_linux_names(given: str, expected: str) -> None:
    assert bundle.normalize_arch(given) == expected


def test_unknown_architecture_names_the_flag() -> None:
    with pytest.raises(ValidationError) as info:
        bundle.normalize_arch("sparc")
    assert info.value.field == "--arch"
    assert "arm64" in info.value.message


def test_source_date_epoch_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567890")
    assert bundle.source_date_epoch() == 1234567890
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert bundle.source_date_epoch() == bundle.DEFAULT_EPOCH


REPO = Path(__file__).resolve().parents[2]


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line:
            name, version = line.split("==")
            pins[bundle.canonical_name(name)] = version.strip()
    return pins


def test_the_lock_pins_what_the_tests_run_with() -> None:
    """The agent is tested with constraints.txt: the lock must name the same versions."""
    constraints = _constraints()
    for name, version in bundle.read_lock():
        assert constraints.get(bundle.canonical_name(name)) == version, name


def test_the_lock_holds_the_agent_dependencies_and_nothing_of_the_controller() -> None:
    names = {bundle.canonical_name(n) for n, _ in bundle.read_lock()}
    assert {"boto3", "requests", "structlog", "apscheduler"} <= names
    assert not names & {"rich", "shtab", "moto", "parliament", "spawn-spored"}


def test_a_bad_lock_line_names_the_file_and_line(tmp_path: Path) -> None:
    lock = tmp_path / "agent.lock"
    lock.write_text("# ok\nboto3==1.0\nrequests>=2\n")
    with pytest.raises(bundle.BundleError, match=r"agent.lock:3: 'requests>=2': accepted: name==version"):
        bundle.read_lock(lock)


def test_bundle_inputs_are_package_data_with_the_checkout_content() -> None:
    inputs = bundle.bundle_inputs()
    assert sorted(inputs) == ["docs/systemd.md", "install.sh", "systemd/spored-failed.service",
                              "systemd/spored-failed.timer", "systemd/spored-failsafe.path",
                              "systemd/spored-failsafe.service", "systemd/spored-poweroff.path",
                              "systemd/spored-poweroff.service", "systemd/spored.service"]
    assert inputs["install.sh"].read_bytes() == (REPO / "packaging" / "install.sh").read_bytes()
    assert inputs["systemd/spored.service"].read_bytes() == (REPO / "systemd" / "spored.service").read_bytes()


def _wheel(tmp_path: Path, name: str, epoch: int = 1_700_000_000) -> Path:
    return bundle.write_agent_wheel(tmp_path / name, version="9.8.7", pins=[("boto3", "1.0"), ("six", "2")],
                                    epoch=epoch)


def test_the_agent_wheel_is_deterministic_and_holds_only_the_agent(tmp_path: Path) -> None:
    one, two = _wheel(tmp_path, "one"), _wheel(tmp_path, "two")
    assert one.name == "spored-9.8.7-py3-none-any.whl"
    assert one.read_bytes() == two.read_bytes()
    assert _wheel(tmp_path, "later", epoch=1_700_000_100).read_bytes() != one.read_bytes()
    with zipfile.ZipFile(one) as whl:
        names = whl.namelist()
        metadata = whl.read("spored-9.8.7.dist-info/METADATA").decode()
        record = whl.read("spored-9.8.7.dist-info/RECORD").decode()
        entry_points = whl.read("spored-9.8.7.dist-info/entry_points.txt").decode()
    assert {n.split("/")[0] for n in names} == {"spored", "spored-9.8.7.dist-info"}
    assert "spored/daemon.py" in names and "spored/py.typed" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".md")]
    assert "Name: spored\n" in metadata and "Requires-Python: >=3.11" in metadata
    assert [line for line in metadata.splitlines() if line.startswith("Requires-Dist")] == \
        ["Requires-Dist: boto3==1.0", "Requires-Dist: six==2"]
    assert "spored = spored.cli:main" in entry_points
    assert len(record.splitlines()) == len(names)  # every file listed, with its hash


def test_an_impure_wheel_is_refused() -> None:
    with pytest.raises(bundle.BundleError, match="not pure-Python"):
        bundle.check_wheelhouse([Path("charset_normalizer-3.5.3-cp311-cp311-manylinux_2_17_x86_64.whl")],
                                [("charset-normalizer", "3.5.3")])


def test_a_wheelhouse_that_differs_from_the_lock_is_refused() -> None:
    wheels = [Path("boto3-1.0-py3-none-any.whl"), Path("extra-2.0-py3-none-any.whl")]
    with pytest.raises(bundle.BundleError) as info:
        bundle.check_wheelhouse(wheels, [("boto3", "1.0"), ("six", "1.17.0")])
    assert "extra==2.0" in info.value.message and "six==1.17.0" in info.value.message
    bundle.check_wheelhouse([Path("boto3-1.0-py3-none-any.whl"), Path("six-1.17.0-py2.py3-none-any.whl")],
                            [("boto3", "1.0"), ("six", "1.17.0")])


def test_the_cache_follows_the_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert bundle.default_cache_dir() == tmp_path / "spawn" / "bundles"
    assert bundle.cached_bundle() is None  # nothing built there


def test_the_cache_key_follows_version_and_lock() -> None:
    pins = bundle.read_lock()
    key = bundle.cache_key(version="1.0", pins=pins, epoch=1)
    assert key == bundle.cache_key(version="1.0", pins=list(reversed(pins)), epoch=1)
    assert key != bundle.cache_key(version="1.1", pins=pins, epoch=1)
    assert key != bundle.cache_key(version="1.0", pins=[*pins[:-1], (pins[-1][0], "0.0.1")], epoch=1)
