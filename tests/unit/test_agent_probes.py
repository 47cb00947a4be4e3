"""Idle probes on fake /proc trees: windowed deltas, never since-boot counters."""

from __future__ import annotations

import stat
import struct
from pathlib import Path

import pytest

from spored.observe import Unknown
from spored.probes import read_counters, read_gpu, read_sessions, read_uptime, signals_between

NET_HEADER = ("Inter-|   Receive                                                |  Transmit\n"
              " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets\n")


def write_proc(root: Path, *, cpu: tuple[int, ...], net: dict[str, tuple[int, int]],
               disks: dict[str, tuple[int, int]]) -> None:
    proc = root / "proc"
    (proc / "net").mkdir(parents=True, exist_ok=True)
    (proc / "stat").write_text("cpu  " + " ".join(map(str, cpu)) + "\ncpu0 1 2 3 4\nbtime 1\n")
    lines = [f"{name:>6}: {rx} 10 0 0 0 0 0 0 {tx} 10 0 0 0 0 0 0" for name, (rx, tx) in net.items()]
    (proc / "net" / "dev").write_text(NET_HEADER + "\n".join(lines) + "\n")
    disk_lines = [f"   8       0 {name} 100 0 {rd} 50 200 0 {wr} 60 0 70 80"
                  for name, (rd, wr) in disks.items()]
    (proc / "diskstats").write_text("\n".join(disk_lines) + "\n")
    (proc / "uptime").write_text("1234.5 2000.0\n")


# Since-boot counters are huge (a busy setup phase); the window in between is quiet.
BIG = 10**12


def test_quiet_window_after_busy_boot(tmp_path: Path) -> None:
    write_proc(tmp_path, cpu=(BIG, 0, BIG, BIG, 0, 0, 0, 0),
               net={"lo": (BIG, BIG), "eth0": (BIG, BIG)}, disks={"nvme0n1": (BIG, BIG)})
    old = read_counters(tmp_path, 100.0)
    # 10 s later: 1 busy jiffy of 100, lo moved a lot (ignored), eth0 2 KB, nvme 4 sectors.
    write_proc(tmp_path, cpu=(BIG + 1, 0, BIG, BIG + 99, 0, 0, 0, 0),
               net={"lo": (BIG * 2, BIG * 2), "eth0": (BIG + 1024, BIG + 1024)},
               disks={"nvme0n1": (BIG + 2, BIG + 2)})
    new = read_counters(tmp_path, 110.0)
    sig = signals_between(old, new, sessions=0, gpu=None)
    assert sig.cpu_percent == 1.0
    assert sig.net_bytes_per_sec == 204.8
    assert sig.disk_bytes_per_sec == 4 * 512 / 10


def test_whole_devices_only(tmp_path: Path) -> None:
    disks = {"nvme0n1": (0, 0), "nvme0n1p1": (0, 0), "xvda": (0, 0), "xvda1": (0, 0), "sda": (0, 0),
             "sda1": (0, 0), "loop0": (0, 0), "dm-0": (0, 0)}
    write_proc(tmp_path, cpu=(1, 0, 1, 1, 0, 0, 0, 0), net={}, disks=disks)
    old = read_counters(tmp_path, 0.0)
    write_proc(tmp_path, cpu=(1, 0, 1, 2, 0, 0, 0, 0), net={},
               disks={k: (10, 0) for k in disks})
    new = read_counters(tmp_path, 1.0)
    # nvme0n1, xvda, sda: 3 devices x 10 sectors; partitions, loop and dm are not counted.
    assert signals_between(old, new, sessions=0, gpu=None).disk_bytes_per_sec == 3 * 10 * 512


def test_first_sample_has_no_window(tmp_path: Path) -> None:
    write_proc(tmp_path, cpu=(1, 0, 1, 1, 0, 0, 0, 0), net={}, disks={})
    sig = signals_between(None, read_counters(tmp_path, 1.0), sessions=0, gpu=None)
    assert isinstance(sig.cpu_percent, Unknown)


def test_missing_files_are_unknown(tmp_path: Path) -> None:
    old = read_counters(tmp_path, 0.0)
    new = read_counters(tmp_path, 10.0)
    sig = signals_between(old, new, sessions=0, gpu=None)
    assert isinstance(sig.cpu_percent, Unknown)
    assert isinstance(sig.net_bytes_per_sec, Unknown)
    assert isinstance(sig.disk_bytes_per_sec, Unknown)
    assert isinstance(read_uptime(tmp_path), Unknown)


def test_counter_reset_is_unknown(tmp_path: Path) -> None:
    write_proc(tmp_path, cpu=(5, 0, 5, 5, 0, 0, 0, 0), net={"eth0": (100, 100)}, disks={})
    old = read_counters(tmp_path, 0.0)
    write_proc(tmp_path, cpu=(6, 0, 5, 9, 0, 0, 0, 0), net={"eth1": (1, 1)}, disks={})
    sig = signals_between(old, read_counters(tmp_path, 1.0), sessions=0, gpu=None)
    assert isinstance(sig.net_bytes_per_sec, Unknown)


def utmp_record(kind: int, pid: int, line: str) -> bytes:
    head = struct.pack("<ii32s4s32s", kind, pid, line.encode(), b"", b"user")
    return head + b"\0" * (384 - len(head))


def test_sessions_from_utmp_live_processes_only(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "proc" / "4242").mkdir(parents=True)
    data = (utmp_record(7, 4242, "pts/0") + utmp_record(7, 999999, "pts/1")  # dead session
            + utmp_record(8, 4242, "pts/2") + utmp_record(2, 0, "~"))
    (tmp_path / "run" / "utmp").write_bytes(data)
    assert read_sessions(tmp_path) == 1


def test_sessions_fall_back_to_pts(tmp_path: Path) -> None:
    (tmp_path / "dev" / "pts").mkdir(parents=True)
    for name in ("0", "3", "ptmx"):
        (tmp_path / "dev" / "pts" / name).touch()
    assert read_sessions(tmp_path) == 2


def test_sessions_unknown_without_utmp_or_pts(tmp_path: Path) -> None:
    assert isinstance(read_sessions(tmp_path), Unknown)


def fake_exe(path: Path, script: str) -> str:
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_gpu_max_utilisation(tmp_path: Path) -> None:
    exe = fake_exe(tmp_path / "nvidia-smi", "printf '3\\n71\\n'")
    assert read_gpu(exe) == 71.0


def test_gpu_failure_is_unknown(tmp_path: Path) -> None:
    exe = fake_exe(tmp_path / "nvidia-smi", "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    assert isinstance(read_gpu(exe), Unknown)


def test_no_gpu_is_not_applicable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert read_gpu() is None
