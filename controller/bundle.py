"""The agent bundle: one reproducible tarball that user-data downloads, verifies and installs.

``spored-bundle-<version>.tar.gz`` holds, under ``spored-bundle-<version>/``:
  install.sh              the installer (venv, offline install, user, units, start)
  wheelhouse/*.whl        the project's wheel and every runtime dependency as wheels, for the
                          instance's platform and each supported Python; ``pip install --no-index``
  systemd/*               spored.service and the backstop's power-off path/service
  docs/systemd.md         what the unit allows and why
  bundle.json             version, platform, Python versions and the sha256 of every file

Reproducible: the same commit gives the same sha256. Dependencies are pinned by constraints.txt
and downloaded as published wheels (byte-identical); the project's wheel is built with
SOURCE_DATE_EPOCH; the tar has sorted entries, fixed mtimes, uid/gid 0, no pax headers, and
the gzip header carries no name and mtime 0. Downloaded wheels are cached per
(requirements, constraints, platform, Python) so a rebuild makes no network call, and the
project's wheel by the content of its sources.

Built from a source checkout (pyproject.toml beside the packages). ``build_bundle`` is the API;
``python -m controller.bundle`` (and ``packaging/build-bundle``) the command.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from spored.errors import SpawnError, ValidationError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PYTHON_VERSIONS = ("3.11", "3.12", "3.13")
# pip runs the offline install from its own wheel (``python pip.whl/pip install``), so the
# instance needs no ensurepip / python3-venv package.
PIP_REQUIREMENT = "pip==26.3"
# manylinux tags AL2023 (glibc 2.34) and Debian 12 (glibc 2.36) accept, newest first.
_MANYLINUX = ("manylinux_2_34", "manylinux_2_28", "manylinux_2_17", "manylinux2014")
ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}
# Used when neither SOURCE_DATE_EPOCH nor a git commit says when the source was made.
DEFAULT_EPOCH = 315532800  # 1980-01-01, the earliest time a zip (wheel) can hold
SOURCE_FILES = ("pyproject.toml", "README.md")
SOURCE_PACKAGES = ("spored", "controller")
UNIT_FILES = ("spored.service", "spored-poweroff.path", "spored-poweroff.service")


class BundleError(SpawnError):
    code = "bundle"


@dataclass(frozen=True)
class Bundle:
    path: Path
    sha256: str
    version: str


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spawn" / "wheels"


def normalize_arch(arch: str) -> str:
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise ValidationError("--arch", f"{arch!r}: accepted: {', '.join(sorted(ARCHITECTURES))}") from None


def source_date_epoch(root: Path = PROJECT_ROOT) -> int:
    """SOURCE_DATE_EPOCH if set, else the last commit's time, else 1980-01-01."""
    env = os.environ.get("SOURCE_DATE_EPOCH", "")
    if env.isdigit():
        return int(env)
    try:
        out = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%ct"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return DEFAULT_EPOCH
    return int(out) if out.isdigit() else DEFAULT_EPOCH


def project_metadata(root: Path = PROJECT_ROOT) -> tuple[str, list[str]]:
    """(version, runtime requirements) from pyproject.toml."""
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        raise BundleError(f"{pyproject}: not found; the bundle is built from a source checkout")
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return str(project["version"]), [str(r) for r in project.get("dependencies", [])]


def _run(cmd: list[str], *, env: dict[str, str] | None = None, what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise BundleError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def _source_files(root: Path) -> list[tuple[str, Path]]:
    files = [(name, root / name) for name in SOURCE_FILES]
    for pkg in SOURCE_PACKAGES:
        for path in sorted((root / pkg).rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc" \
                    and not any(part.endswith(".egg-info") for part in rel.parts):
                files.append((rel.as_posix(), path))
    return files


def build_project_wheel(dest: Path, *, epoch: int, root: Path = PROJECT_ROOT,
                        cache_dir: Path | None = None) -> Path:
    """The project's own wheel, built from a clean copy of the sources with SOURCE_DATE_EPOCH.

    Cached by the sources' content, the epoch and the building Python: the same inputs give the
    same wheel, so a second bundle from an unchanged tree skips the build.
    """
    files = _source_files(root)
    digest = hashlib.sha256(f"{epoch}|{sys.version}".encode())
    for name, path in files:
        digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    slot = (cache_dir / "project" / digest.hexdigest()[:24]) if cache_dir else None
    dest.mkdir(parents=True, exist_ok=True)
    if slot is not None:
        cached = sorted(slot.glob("*.whl"))
        if len(cached) == 1:
            return Path(shutil.copy2(cached[0], dest / cached[0].name))
    with tempfile.TemporaryDirectory(prefix="spored-src-") as tmp:
        src = Path(tmp) / "src"
        for name, path in files:
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name)
        out = Path(tmp) / "out"
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "PYTHONHASHSEED": "0"}
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
              "-q", "-w", str(out), str(src)], env=env, what="building the project wheel")
        wheels = list(out.glob("*.whl"))
        if len(wheels) != 1:
            raise BundleError(f"building the project wheel gave {len(wheels)} wheels")
        if slot is not None:
            partial = slot.with_name(f".partial-{slot.name}-{os.getpid()}")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            shutil.copy2(wheels[0], partial / wheels[0].name)
            shutil.rmtree(slot, ignore_errors=True)
            partial.rename(slot)
        return Path(shutil.copy2(wheels[0], dest / wheels[0].name))


def _platform_args(arch: str) -> list[str]:
    args: list[str] = []
    for tag in _MANYLINUX:
        args += ["--platform", f"{tag}_{arch}"]
    return args


def download_dependencies(requirements: Sequence[str], *, arch: str, python_version: str,
                          cache_dir: Path, constraints: Path | None) -> list[Path]:
    """Every runtime dependency as a published wheel for (arch, python), cached by content key."""
    key_src = json.dumps({
        "requirements": sorted(requirements),
        "constraints": constraints.read_text(encoding="utf-8") if constraints else "",
        "arch": arch, "python": python_version, "manylinux": _MANYLINUX,
    }, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
    slot = cache_dir / f"py{python_version}-{arch}-{key}"
    done = slot / ".complete"
    if not done.is_file():
        partial = cache_dir / f".partial-{key}-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
               "--only-binary=:all:", *_platform_args(arch), "--python-version", python_version,
               "--implementation", "cp", "-d", str(partial)]
        if constraints is not None:
            cmd += ["-c", str(constraints)]
        _run([*cmd, *requirements], what=f"downloading dependencies for Python {python_version} {arch}")
        (partial / ".complete").write_text(key_src)
        shutil.rmtree(slot, ignore_errors=True)
        partial.rename(slot)
    return sorted(slot.glob("*.whl"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tarinfo(name: str, *, size: int = 0, mode: int, epoch: int, is_dir: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = epoch
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    return info


def write_tarball(files: dict[str, Path], target: Path, *, top: str, epoch: int,
                  executables: frozenset[str] = frozenset()) -> None:
    """A deterministic .tar.gz of ``files`` (archive name -> source) under ``top/``."""
    dirs = {top}
    for name in files:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add(f"{top}/{'/'.join(parts[:i])}")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        entries = sorted([(d, None) for d in dirs] + [(f"{top}/{n}", p) for n, p in files.items()],
                         key=lambda e: e[0])
        for name, src in entries:
            if src is None:
                tar.addfile(_tarinfo(name, mode=0o755, epoch=epoch, is_dir=True))
                continue
            data = src.read_bytes()
            rel = name[len(top) + 1:]
            mode = 0o755 if rel in executables else 0o644
            tar.addfile(_tarinfo(name, size=len(data), mode=mode, epoch=epoch), io.BytesIO(data))
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0,
                                             compresslevel=9) as gz:
        gz.write(raw.getvalue())
    tmp.replace(target)


def build_bundle(out_dir: Path, *, arch: str = "x86_64",
                 python_versions: Sequence[str] = PYTHON_VERSIONS,
                 cache_dir: Path | None = None, root: Path = PROJECT_ROOT) -> Bundle:
    """Build ``out_dir/spored-bundle-<version>.tar.gz`` (+ ``.sha256``) for EC2 ``arch``."""
    arch = normalize_arch(arch)
    for pv in python_versions:
        if not (pv.count(".") == 1 and all(p.isdigit() for p in pv.split("."))):
            raise ValidationError("--python-version", f"{pv!r}: accepted: MAJOR.MINOR such as 3.11")
    version, requirements = project_metadata(root)
    epoch = source_date_epoch(root)
    cache = cache_dir or default_cache_dir()
    constraints = root / "constraints.txt"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="spored-bundle-") as tmp:
        wheelhouse: dict[str, Path] = {}
        project_wheel = build_project_wheel(Path(tmp) / "project", epoch=epoch, root=root,
                                            cache_dir=cache)
        wheelhouse[project_wheel.name] = project_wheel
        for pv in python_versions:
            for wheel in download_dependencies([*requirements, PIP_REQUIREMENT], arch=arch,
                                               python_version=pv, cache_dir=cache,
                                               constraints=constraints if constraints.is_file() else None):
                wheelhouse.setdefault(wheel.name, wheel)
        files: dict[str, Path] = {f"wheelhouse/{n}": p for n, p in wheelhouse.items()}
        files["install.sh"] = root / "packaging" / "install.sh"
        for unit in UNIT_FILES:
            files[f"systemd/{unit}"] = root / "systemd" / unit
        docs = root / "docs" / "systemd.md"
        if docs.is_file():
            files["docs/systemd.md"] = docs
        manifest = {
            "name": "spored-bundle", "version": version, "arch": arch,
            "python_versions": list(python_versions),
            "files": {n: _sha256(p) for n, p in sorted(files.items())},
        }
        manifest_path = Path(tmp) / "bundle.json"
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        files["bundle.json"] = manifest_path
        top = f"spored-bundle-{version}"
        target = out_dir / f"{top}.tar.gz"
        write_tarball(files, target, top=top, epoch=epoch, executables=frozenset({"install.sh"}))
    digest = _sha256(target)
    (out_dir / f"{target.name}.sha256").write_text(f"{digest}  {target.name}\n")
    return Bundle(path=target, sha256=digest, version=version)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build-bundle", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("dist"), help="output directory (default: dist)")
    parser.add_argument("--arch", default="x86_64", help="instance architecture: x86_64 or arm64")
    parser.add_argument("--python-version", action="append", dest="python_versions",
                        help="Python the instance may use (repeatable; default: "
                        f"{' '.join(PYTHON_VERSIONS)})")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="wheel cache (default: ~/.cache/spawn/wheels)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        bundle = build_bundle(args.out, arch=args.arch,
                              python_versions=tuple(args.python_versions or PYTHON_VERSIONS),
                              cache_dir=args.cache_dir)
    except SpawnError as exc:
        sys.stderr.write(f"build-bundle: {exc.message}\n")
        return int(exc.exit_status)
    if args.json:
        sys.stdout.write(json.dumps({"path": str(bundle.path), "sha256": bundle.sha256,
                                     "version": bundle.version}) + "\n")
    else:
        sys.stdout.write(f"{bundle.sha256}  {bundle.path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
