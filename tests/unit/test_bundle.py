"""The bundle's tarball writer and inputs: deterministic bytes, the archive a user extracts."""

from __future__ import annotations

import gzip
import hashlib
import tarfile
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


def test_source_date_epoch_without_git_is_fixed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert bundle.source_date_epoch(tmp_path) == bundle.DEFAULT_EPOCH


def test_version_and_requirements_come_from_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "spawn-spored"\nversion = "9.8.7"\ndependencies = ["boto3>=1.34"]\n')
    assert bundle.project_metadata(tmp_path) == ("9.8.7", ["boto3>=1.34"])


def test_building_outside_a_checkout_says_so(tmp_path: Path) -> None:
    with pytest.raises(bundle.BundleError, match="source checkout"):
        bundle.project_metadata(tmp_path)


def test_bad_python_version_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        bundle.build_bundle(tmp_path, python_versions=("3",))
    assert info.value.field == "--python-version"


def test_command_refuses_an_unknown_architecture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bundle.main(["--out", str(tmp_path), "--arch", "sparc"]) == 2
    err = capsys.readouterr().err
    assert "--arch" in err and "x86_64" in err
    assert not list(tmp_path.iterdir())  # nothing built
