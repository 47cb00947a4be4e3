"""Idle signals from the local machine, measured as deltas over a window (never since-boot counters).

``read_counters(root)`` takes a raw snapshot of /proc; ``signals_between(old, new)`` turns two
snapshots into rates over the window between them. A reading that fails is ``Unknown`` and the
decision counts it as *active*. GPU utilisation comes from ``nvidia-smi`` when it is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from spored.observe import Unknown

# Whole block devices only (partitions would double count): sda, xvdf, vdb, nvme0n1, mmcblk0.
_WHOLE_DISK_RE = re.compile(r"^(?:nvme\d+n\d+|(?:s|h|v|xv)d[a-z]+|mmcblk\d+)$")
_SECTOR = 512

# utmp record (glibc, 64-bit): type i32, pid i32, line 32s, id 4s, user 32s, host 256s, ...
_UTMP_RECORD = 384
_UTMP_HEAD = struct.Struct("<ii32s4s32s")
_USER_PROCESS = 7


@dataclass(frozen=True)
class Counters:
    """One snapshot. Each field is a raw cumulative counter or Unknown."""

    monotonic: float
    cpu_busy: tuple[int, int] | Unknown  # (busy jiffies, total jiffies)
    net_bytes: int | Unknown
    disk_bytes: int | Unknown


@dataclass(frozen=True)
class Signals:
    """Activity over one window. None = not applicable (no GPU)."""

    cpu_percent: float | Unknown
    net_bytes_per_sec: float | Unknown
    disk_bytes_per_sec: float | Unknown
    sessions: int | Unknown
    gpu_percent: float | Unknown | None

    def as_dict(self) -> dict[str, object]:
        return {k: (str(v) if isinstance(v, Unknown) else v) for k, v in self.__dict__.items()}


def read_cpu(root: Path) -> tuple[int, int] | Unknown:
    try:
        first = (root / "proc/stat").read_text().splitlines()[0].split()
        if first[0] != "cpu":
            return Unknown("/proc/stat has no cpu line")
        values = [int(v) for v in first[1:9]]
    except (OSError, IndexError, ValueError) as exc:
        return Unknown(f"/proc/stat: {exc}")
    values += [0] * (8 - len(values))
    total = sum(values)
    idle = values[3] + values[4]  # idle + iowait
    return (total - idle, total)


def read_net(root: Path) -> int | Unknown:
    try:
        lines = (root / "proc/net/dev").read_text().splitlines()[2:]
        total = 0
        for line in lines:
            name, _, rest = line.partition(":")
            if name.strip() == "lo" or not rest:
                continue
            fields = rest.split()
            total += int(fields[0]) + int(fields[8])
        return total
    except (OSError, IndexError, ValueError) as exc:
        return Unknown(f"/proc/net/dev: {exc}")


def read_disk(root: Path) -> int | Unknown:
    try:
        total = 0
        for line in (root / "proc/diskstats").read_text().splitlines():
            fields = line.split()
            if len(fields) < 10 or not _WHOLE_DISK_RE.match(fields[2]):
                continue
            total += (int(fields[5]) + int(fields[9])) * _SECTOR
        return total
    except (OSError, ValueError) as exc:
        return Unknown(f"/proc/diskstats: {exc}")


def read_sessions(root: Path) -> int | Unknown:
    """Interactive sessions: live USER_PROCESS entries in utmp, else numbered PTYs in /dev/pts."""
    for utmp in (root / "run/utmp", root / "var/run/utmp"):
        try:
            data = utmp.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            return Unknown(f"{utmp}: {exc}")
        count = 0
        for offset in range(0, len(data) - _UTMP_RECORD + 1, _UTMP_RECORD):
            kind, pid, _line, _id, _user = _UTMP_HEAD.unpack_from(data, offset)
            if kind == _USER_PROCESS and pid > 0 and (root / "proc" / str(pid)).exists():
                count += 1
        return count
    pts = root / "dev/pts"
    try:
        return sum(1 for entry in os.listdir(pts) if entry.isdigit())
    except OSError as exc:
        return Unknown(f"no utmp and {pts}: {exc}")


class NvidiaSmi:
    """Where nvidia-smi is (None: not installed), looked up again after ``ttl`` seconds: a driver
    the workload installs after the agent started is found within minutes, and the idle tick does
    not search $PATH every time."""

    def __init__(self, ttl: float = 300.0) -> None:
        self.ttl = ttl
        self._found: tuple[float, str | None] | None = None

    def path(self, monotonic: float) -> str | None:
        if self._found is None or monotonic - self._found[0] >= self.ttl:
            self._found = (monotonic, shutil.which("nvidia-smi"))
        return self._found[1]


def read_gpu(nvidia_smi: str | None = None, timeout: float = 5.0) -> float | Unknown | None:
    exe = nvidia_smi or shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=timeout, check=True).stdout
        values = [float(v) for v in out.split()]
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return Unknown(f"nvidia-smi: {type(exc).__name__}")
    if not values:
        return Unknown("nvidia-smi reported no GPU")
    return max(values)


def read_counters(root: Path, monotonic: float) -> Counters:
    return Counters(monotonic=monotonic, cpu_busy=read_cpu(root), net_bytes=read_net(root),
                    disk_bytes=read_disk(root))


def _rate(old: int | Unknown, new: int | Unknown, seconds: float, what: str) -> float | Unknown:
    if isinstance(old, Unknown):
        return old
    if isinstance(new, Unknown):
        return new
    if new < old:
        return Unknown(f"{what} counter went backwards")
    return (new - old) / seconds


def signals_between(old: Counters | None, new: Counters, *, sessions: int | Unknown,
                    gpu: float | Unknown | None) -> Signals:
    """Rates over the window ``old -> new``. Without a previous snapshot everything is Unknown."""
    if old is None or new.monotonic <= old.monotonic:
        none = Unknown("no window yet")
        return Signals(none, none, none, sessions, gpu)
    seconds = new.monotonic - old.monotonic
    cpu: float | Unknown
    if isinstance(old.cpu_busy, Unknown):
        cpu = old.cpu_busy
    elif isinstance(new.cpu_busy, Unknown):
        cpu = new.cpu_busy
    else:
        busy = new.cpu_busy[0] - old.cpu_busy[0]
        total = new.cpu_busy[1] - old.cpu_busy[1]
        cpu = Unknown("no CPU time elapsed") if total <= 0 or busy < 0 else 100.0 * busy / total
    return Signals(
        cpu_percent=cpu,
        net_bytes_per_sec=_rate(old.net_bytes, new.net_bytes, seconds, "network"),
        disk_bytes_per_sec=_rate(old.disk_bytes, new.disk_bytes, seconds, "disk"),
        sessions=sessions,
        gpu_percent=gpu,
    )


def read_uptime(root: Path) -> float | Unknown:
    try:
        return float((root / "proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError) as exc:
        return Unknown(f"/proc/uptime: {exc}")


def read_boot_time(root: Path) -> float | Unknown:
    """When this boot began, in seconds since the epoch: ``btime`` in /proc/stat."""
    try:
        for line in (root / "proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, IndexError, ValueError) as exc:
        return Unknown(f"/proc/stat btime: {exc}")
    return Unknown("/proc/stat has no btime line")


def read_boot_id(root: Path) -> str:
    try:
        return (root / "proc/sys/kernel/random/boot_id").read_text().strip() or "unknown-boot"
    except OSError:
        return "unknown-boot"
