"""The agent bundle: one reproducible tarball that user-data downloads, verifies and installs.

``spored-bundle-<version>.tar.gz`` holds, under ``spored-bundle-<version>/``:
  install.sh              the installer (venv, offline install, user, units, start)
  wheelhouse/*.whl        the agent's wheel (``spored``), every runtime dependency and pip, all
                          pure-Python (``py3-none-any``): one wheelhouse for every Python >= 3.11
                          on x86_64 and arm64; installed with ``pip install --no-index``
  systemd/*               spored.service and the backstop's power-off path/service
  docs/systemd.md         what the unit allows and why
  bundle.json             version, platform ``any``, the locked requirements and every file's sha256

Only the agent goes on the instance: the ``spored`` wheel is written here from the installed
``spored`` package (its ``.py`` files and ``py.typed``) with generated metadata whose
Requires-Dist is the lock (``bundle_files/agent.lock``), so the controller, rich, the sandbox and
moto never reach an instance.

Built from the installed distribution, no source tree involved: install.sh, the units, the docs
page and the lock are package data (``controller/bundle_files/``); the dependencies come from the
package index the user's pip already uses (``pip download`` honours PIP_INDEX_URL, pip.conf, ...).

Reproducible: the same inputs give the same sha256. The locked wheels are published files
(byte-identical); the agent's wheel and the tar have sorted entries and fixed times
(SOURCE_DATE_EPOCH, else 1980-01-01); the gzip header carries no name and mtime 0.

Cached: ``$XDG_CACHE_HOME/spawn/bundles/<key>/`` (default ``~/.cache/spawn/bundles``), ``key`` a
digest of every input (version, lock, agent files, installer, units), so a launch builds the
bundle once and a new version or lock gets a new one. A lock file serializes parallel builds.

``ensure_bundle`` / ``build_bundle`` are the API; ``spawn bundle`` and ``packaging/build-bundle``
the commands.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import spored
from spored.errors import SpawnError, UsageError, ValidationError

# Pythons an instance may use; the lock is resolved for each, so a marker that differs between
# them cannot leave a wheel out.
PYTHON_VERSIONS = ("3.11", "3.12", "3.13", "3.14")
REQUIRES_PYTHON = ">=3.11"
# pip runs the offline install from its own wheel (``python pip.whl/pip install``), so the
# instance needs no ensurepip / python3-venv package.
PIP_REQUIREMENT = "pip==26.3"
ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}
# Used when SOURCE_DATE_EPOCH is not set: the earliest time a zip (wheel) can hold.
DEFAULT_EPOCH = 315532800  # 1980-01-01
AGENT_NAME = "spored"
UNIT_FILES = ("spored.service", "spored-poweroff.path", "spored-poweroff.service",
              "spored-failsafe.path", "spored-failsafe.service", "spored-failed.timer",
              "spored-failed.service")
# Bump when the layout changes: part of the cache key.
FORMAT = 2
_PURE = re.compile(r"-py3-none-any\.whl$|-py2\.py3-none-any\.whl$")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")

Progress = Callable[[str], None]


class BundleError(SpawnError):
    code = "bundle"
    exit_status = UsageError.exit_status


@dataclass(frozen=True)
class Bundle:
    path: Path
    sha256: str
    version: str
    size: int = 0
    built: bool = False  # False: found in the cache
    contents: tuple[str, ...] = field(default=())


def _quiet(_message: str) -> None:
    pass


def normalize_arch(arch: str) -> str:
    """EC2/Linux architecture names; the bundle itself is the same for every one."""
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise ValidationError("--arch", f"{arch!r}: accepted: {', '.join(sorted(ARCHITECTURES))}") from None


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spawn" / "bundles"


def source_date_epoch() -> int:
    env = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(env) if env.isdigit() else DEFAULT_EPOCH


def canonical_name(name: str) -> str:
    """PEP 503 normalized name."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ------------------------------------------------------------------ inputs (package data)
def _data(name: str) -> Path:
    """A file shipped as package data in ``controller/bundle_files`` (works from a wheel, pipx,
    a git-URL install and an editable checkout)."""
    path = Path(str(resources.files("controller") / "bundle_files" / name))
    if not path.is_file():
        raise BundleError(f"{path}: missing from this installation of spawn",
                          hint="reinstall spawn; or pass --agent-bundle FILE")
    return path


def lock_file() -> Path:
    return _data("agent.lock")


def read_lock(path: Path | None = None) -> list[tuple[str, str]]:
    """``[(name, version)]`` from the lock: one ``name==version`` per line, ``#`` comments."""
    source = path or lock_file()
    pins: list[tuple[str, str]] = []
    for number, raw in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        if match is None:
            raise BundleError(f"{source}:{number}: {line!r}: accepted: name==version")
        pins.append((match.group(1), match.group(2)))
    return pins


def agent_files() -> dict[str, Path]:
    """The installed ``spored`` package's files that make the agent's wheel (archive name -> path)."""
    package = Path(spored.__file__).resolve().parent
    files: dict[str, Path] = {}
    for path in sorted(package.rglob("*")):
        rel = path.relative_to(package)
        wanted = path.suffix == ".py" or path.name == "py.typed"
        if path.is_file() and "__pycache__" not in rel.parts and wanted:
            files[f"{AGENT_NAME}/{rel.as_posix()}"] = path
    if f"{AGENT_NAME}/cli.py" not in files:
        raise BundleError(f"{package}: the spored package is incomplete (no cli.py)")
    return files


def bundle_inputs() -> dict[str, Path]:
    """Every non-wheel file of the bundle (archive name -> path)."""
    files = {"install.sh": _data("install.sh")}
    for unit in UNIT_FILES:
        files[f"systemd/{unit}"] = _data(f"systemd/{unit}")
    files["docs/systemd.md"] = _data("systemd.md")
    return files


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def cache_key(*, version: str, pins: Sequence[tuple[str, str]], epoch: int) -> str:
    """A digest of everything the bundle is made from."""
    digest = hashlib.sha256(json.dumps({
        "format": FORMAT, "version": version, "epoch": epoch, "pip": PIP_REQUIREMENT,
        "pythons": PYTHON_VERSIONS, "pins": sorted(pins),
    }, sort_keys=True).encode())
    for name, path in sorted({**agent_files(), **bundle_inputs()}.items()):
        digest.update(name.encode() + b"\0" + bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()[:20]


# ------------------------------------------------------------------ the agent's wheel
def _zipinfo(name: str, epoch: int, *, executable: bool = False) -> zipfile.ZipInfo:
    import time

    info = zipfile.ZipInfo(name, date_time=time.gmtime(max(epoch, DEFAULT_EPOCH))[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = ((0o755 if executable else 0o644) | 0o100000) << 16
    info.create_system = 3  # unix: the modes above are honoured
    return info


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_agent_wheel(dest: Path, *, version: str, pins: Sequence[tuple[str, str]], epoch: int) -> Path:
    """``spored-<version>-py3-none-any.whl`` from the installed spored package.

    Written here rather than by a build backend: a wheel is a zip of the package plus three
    metadata files (PEP 427, core metadata 2.1, PEP 376 RECORD); doing it directly needs no
    network, no build backend and no source tree, and is byte-for-byte deterministic.
    """
    dist_info = f"{AGENT_NAME}-{version}.dist-info"
    metadata = [
        "Metadata-Version: 2.1", f"Name: {AGENT_NAME}", f"Version: {version}",
        "Summary: spored, the on-instance agent of spawn: ends its own EC2 instance when its "
        "lifecycle says so",
        "License: Apache-2.0", f"Requires-Python: {REQUIRES_PYTHON}",
        *(f"Requires-Dist: {name}=={pin}" for name, pin in sorted(pins, key=lambda p: canonical_name(p[0]))),
    ]
    meta_files = {
        f"{dist_info}/METADATA": ("\n".join(metadata) + "\n").encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: spawn (controller.bundle)\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist_info}/entry_points.txt": b"[console_scripts]\nspored = spored.cli:main\n",
        f"{dist_info}/top_level.txt": b"spored\n",
    }
    entries = [(name, path.read_bytes()) for name, path in sorted(agent_files().items())]
    entries += sorted(meta_files.items())
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in entries]
    record.append(f"{dist_info}/RECORD,,")
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"{AGENT_NAME}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w") as whl:
        for name, data in entries:
            whl.writestr(_zipinfo(name, epoch), data)
    return target


# ------------------------------------------------------------------ the dependencies
def _pip_available() -> bool:
    proc = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, timeout=60,
                          check=False)
    return proc.returncode == 0


def _run_pip(args: list[str], *, what: str, progress: Progress) -> None:
    """``python -m pip ARGS`` in the user's own pip configuration, its lines passed to ``progress``."""
    cmd = [sys.executable, "-m", "pip", *args]
    tail: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None  # noqa: S101 - stdout=PIPE
        for raw in proc.stdout:
            line = raw.rstrip()
            if line:
                tail = [*tail[-14:], line]
                progress(f"  pip: {line}")
        code = proc.wait()
    if code != 0:
        raise BundleError(f"{what} failed (pip exit {code}):\n" + "\n".join(tail),
                          hint="check that pip can reach your package index (PIP_INDEX_URL, "
                               "pip.conf); or build the bundle where it can with `spawn bundle "
                               "write FILE` and pass --agent-bundle FILE")


def download_dependencies(pins: Sequence[tuple[str, str]], dest: Path, *, progress: Progress) -> list[Path]:
    """The locked dependencies and pip as pure-Python wheels (``--platform any --abi none``):
    pip refuses any that has no ``py3-none-any`` wheel, and the resolved set must be the lock."""
    if not _pip_available():
        raise BundleError(f"{sys.executable} has no pip to download the agent's dependencies",
                          hint="install pip into spawn's environment, or pass --agent-bundle FILE "
                               "(written elsewhere with `spawn bundle write FILE`)")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="spawn-lock-") as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text("".join(f"{n}=={v}\n" for n, v in pins) + PIP_REQUIREMENT + "\n")
        for number, python in enumerate(PYTHON_VERSIONS):
            # The first resolution downloads; the others resolve offline against what it got, so a
            # dependency another Python would need (a marker) fails here instead of on an instance.
            offline = ["--no-index", "--find-links", str(dest)] if number else []
            progress(f"{'checking' if number else 'downloading'} {len(pins) + 1} locked wheels for "
                     f"Python {python} with pip")
            _run_pip(["download", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
                      "--only-binary=:all:", "--platform", "any", "--abi", "none",
                      "--implementation", "py", "--python-version", python, *offline,
                      "-d", str(dest), "-r", str(requirements)],
                     what=f"downloading the agent's dependencies for Python {python}", progress=progress)
    wheels = sorted(dest.glob("*.whl"))
    check_wheelhouse(wheels, [*pins, tuple(PIP_REQUIREMENT.split("=="))])  # type: ignore[list-item]
    return wheels


def wheel_name_version(wheel: str) -> tuple[str, str]:
    name, version = Path(wheel).name.split("-")[:2]
    return canonical_name(name), version


def check_wheelhouse(wheels: Sequence[Path], pins: Sequence[tuple[str, str]]) -> None:
    """Every wheel pure-Python, and exactly one per locked distribution at its locked version."""
    impure = [w.name for w in wheels if not _PURE.search(w.name)]
    if impure:
        raise BundleError(f"not pure-Python (py3-none-any): {', '.join(impure)}; the agent's "
                          "dependencies must be, so one wheelhouse serves every platform")
    have = {wheel_name_version(w.name) for w in wheels}
    want = {(canonical_name(n), v) for n, v in pins}
    if have != want:
        extra = sorted(f"{n}=={v}" for n, v in have - want)
        missing = sorted(f"{n}=={v}" for n, v in want - have)
        raise BundleError(f"the downloaded wheels differ from the lock: not locked {extra or '-'}, "
                          f"missing {missing or '-'}", hint="update controller/bundle_files/agent.lock")


# ------------------------------------------------------------------ the tarball
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


def build_bundle(out_dir: Path, *, progress: Progress = _quiet, wheel_dir: Path | None = None) -> Bundle:
    """Build ``out_dir/spored-bundle-<version>.tar.gz`` (+ ``.sha256``) from this installation.

    ``wheel_dir``: where downloaded wheels are kept between builds (default: a temporary folder).
    """
    version = spored.__version__
    pins = read_lock()
    epoch = source_date_epoch()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="spored-bundle-") as tmp:
        deps_dir = wheel_dir or Path(tmp) / "deps"
        wheels = download_dependencies(pins, deps_dir, progress=progress)
        progress(f"writing the agent's wheel {AGENT_NAME}-{version} from {Path(spored.__file__).parent}")
        agent = write_agent_wheel(Path(tmp) / "agent", version=version, pins=pins, epoch=epoch)
        files: dict[str, Path] = {f"wheelhouse/{w.name}": w for w in [*wheels, agent]}
        files.update(bundle_inputs())
        manifest = {
            "name": "spored-bundle", "version": version, "platform": "any",
            "requires_python": REQUIRES_PYTHON, "python_versions": list(PYTHON_VERSIONS),
            "locked": [f"{n}=={v}" for n, v in sorted(pins, key=lambda p: canonical_name(p[0]))],
            "files": {n: sha256_file(p) for n, p in sorted(files.items())},
        }
        manifest_path = Path(tmp) / "bundle.json"
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        files["bundle.json"] = manifest_path
        top = f"spored-bundle-{version}"
        target = out_dir / f"{top}.tar.gz"
        progress(f"writing {target}")
        write_tarball(files, target, top=top, epoch=epoch, executables=frozenset({"install.sh"}))
    digest = sha256_file(target)
    (out_dir / f"{target.name}.sha256").write_text(f"{digest}  {target.name}\n")
    return Bundle(path=target, sha256=digest, version=version, size=target.stat().st_size, built=True,
                  contents=tuple(sorted(files)))


# ------------------------------------------------------------------ the cache
@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cache_slot(cache_dir: Path | None = None) -> Path:
    pins = read_lock()
    return (cache_dir or default_cache_dir()) / cache_key(version=spored.__version__, pins=pins,
                                                          epoch=source_date_epoch())


def cached_bundle(cache_dir: Path | None = None) -> Bundle | None:
    """The bundle for this installation when it is in the cache (and intact), else None."""
    slot = cache_slot(cache_dir)
    target = slot / f"spored-bundle-{spored.__version__}.tar.gz"
    sums = slot / f"{target.name}.sha256"
    if not (target.is_file() and sums.is_file()):
        return None
    digest = sha256_file(target)
    if sums.read_text().split()[:1] != [digest]:
        return None  # damaged: rebuilt
    return Bundle(path=target, sha256=digest, version=spored.__version__, size=target.stat().st_size,
                  contents=tuple(contents(target)))


def ensure_bundle(*, cache_dir: Path | None = None, force: bool = False,
                  progress: Progress = _quiet) -> Bundle:
    """The cached bundle for this installation, built on first use (or with ``force``)."""
    cache = cache_dir or default_cache_dir()
    slot = cache_slot(cache)
    with _locked(cache / ".lock"):
        if not force:
            found = cached_bundle(cache)
            if found is not None:
                return found
        progress(f"building the agent bundle (once per spawn version; cached in {slot})")
        partial = slot.with_name(f".partial-{slot.name}-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        pins_key = hashlib.sha256(repr(sorted(read_lock())).encode()).hexdigest()[:16]
        built = build_bundle(partial, progress=progress, wheel_dir=cache / ".wheels" / pins_key)
        shutil.rmtree(slot, ignore_errors=True)
        partial.rename(slot)
        target = slot / built.path.name
        return Bundle(path=target, sha256=built.sha256, version=built.version, size=built.size, built=True,
                      contents=built.contents)


def contents(path: Path) -> list[str]:
    """File names inside a bundle, relative to its top folder."""
    with tarfile.open(path) as tar:
        return sorted(m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile() and "/" in m.name)


def install_agent(tarball: Path, dest: Path, *, python: str | None = None) -> Path:
    """Install the agent from a bundle into a fresh venv ``dest`` the way install.sh does (offline,
    pip run from the bundle's own wheel), without the system parts (user, units); returns the
    venv's python. For checking a bundle and measuring the agent as installed."""
    with tempfile.TemporaryDirectory(prefix="spored-bundle-x-") as tmp:
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="data")
        top = next(Path(tmp).iterdir())
        wheelhouse = top / "wheelhouse"
        pip_wheel = next(wheelhouse.glob("pip-*.whl"))
        agent = next(wheelhouse.glob(f"{AGENT_NAME}-*.whl"))
        subprocess.run([python or sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True,
                       timeout=300)
        venv_python = dest / "bin" / "python"
        proc = subprocess.run([str(venv_python), str(pip_wheel / "pip"), "--disable-pip-version-check",
                               "--no-input", "-q", "install", "--no-index", "--find-links", str(wheelhouse),
                               str(agent)], capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            raise BundleError(f"installing {agent.name} from {tarball} failed:\n{proc.stderr[-3000:]}")
    return venv_python


def describe(bundle: Bundle) -> dict[str, Any]:
    return {"path": str(bundle.path), "sha256": bundle.sha256, "version": bundle.version,
            "size": bundle.size, "built": bundle.built, "contents": list(bundle.contents)}


def main(argv: Sequence[str] | None = None) -> int:
    """``packaging/build-bundle``: build a bundle into a folder (what ``spawn bundle write`` does)."""
    parser = argparse.ArgumentParser(prog="build-bundle", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("dist"), help="output directory (default: dist)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        bundle = build_bundle(args.out, progress=lambda m: print(m, file=sys.stderr))
    except SpawnError as exc:
        sys.stderr.write(f"build-bundle: {exc.message}\n")
        return int(exc.exit_status)
    if args.json:
        sys.stdout.write(json.dumps(describe(bundle)) + "\n")
    else:
        sys.stdout.write(f"{bundle.sha256}  {bundle.path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
