"""A real systemd in a container, for the end-to-end tier (see docs/systemd.md, "End-to-end test").

- ``Network``: a network namespace and a veth pair created by the test (unique names and a
  unique link-local /30 per run). The host end carries ``169.254.169.254/32`` too, so the
  instance metadata emulator listens at its real address on the host side.
- ``Container``: ``systemd-nspawn --volatile=overlay --register=no --keep-unit`` booting this
  host's own root read-only (bind-mounted inside a private mount namespace, so no mount outlives
  the run) with every host-enabled service masked. All writes go to RAM.
- Commands run inside with ``nsenter -t <pid 1> -a``.

Every run takes a lock: two runs at once would both want 169.254.169.254:80 on the host.
Cleanup (processes, veth, namespace) happens in ``close()`` and is safe to call twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

IMDS_ADDRESS = "169.254.169.254"
LOCK_FILE = "/run/spawn-e2e.lock"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def ensure_nspawn() -> str:
    """systemd-nspawn, installed with apt-get when missing (CI machines start without it)."""
    found = shutil.which("systemd-nspawn")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=300,
                   capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "systemd-container"], check=True, env=env,
                   timeout=300, capture_output=True)
    found = shutil.which("systemd-nspawn")
    if not found:
        raise RuntimeError("systemd-container installed but systemd-nspawn is not on PATH")
    return found


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


@dataclass
class Network:
    netns: str
    host_if: str
    peer_if: str
    host_ip: str
    peer_ip: str

    @classmethod
    def create(cls, run_id: str) -> Network:
        third = 100 + secrets.randbelow(100)
        fourth = 4 * secrets.randbelow(63)
        net = cls(netns=f"spawn-e2e-{run_id}", host_if=f"ve-sp{run_id}", peer_if=f"vp-sp{run_id}",
                  host_ip=f"169.254.{third}.{fourth + 1}", peer_ip=f"169.254.{third}.{fourth + 2}")
        try:
            _ip("netns", "add", net.netns)
            _ip("link", "add", net.host_if, "type", "veth", "peer", "name", net.peer_if)
            _ip("link", "set", net.peer_if, "netns", net.netns)
            _ip("addr", "add", f"{net.host_ip}/30", "dev", net.host_if)
            _ip("addr", "add", f"{IMDS_ADDRESS}/32", "dev", net.host_if)
            _ip("link", "set", net.host_if, "up")
            _ip("-n", net.netns, "addr", "add", f"{net.peer_ip}/30", "dev", net.peer_if)
            _ip("-n", net.netns, "link", "set", "lo", "up")
            _ip("-n", net.netns, "link", "set", net.peer_if, "up")
            _ip("-n", net.netns, "route", "add", "default", "via", net.host_ip)
        except BaseException:
            net.delete()
            raise
        return net

    @staticmethod
    def sweep_leftovers() -> list[str]:
        """Delete veths and namespaces an earlier, killed run left (call with the run lock held:
        then no other run owns one). A leftover with 169.254.169.254 would answer for us."""
        removed = []
        for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0] if line.count(":") >= 2 else ""
            if name.startswith("ve-sp"):
                _ip("link", "del", name, check=False)
                removed.append(name)
        for line in _ip("netns", "list", check=False).stdout.splitlines():
            name = line.split()[0] if line.strip() else ""
            if name.startswith("spawn-e2e-"):
                _ip("netns", "del", name, check=False)
                removed.append(name)
        return removed

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    def delete(self) -> None:
        _ip("link", "del", self.host_if, check=False)  # removes the peer with it
        _ip("netns", "del", self.netns, check=False)

    def exists(self) -> bool:
        return (_ip("link", "show", self.host_if, check=False).returncode == 0
                or Path(self.netns_path).exists())


def host_enabled_units() -> list[str]:
    """Units the host enables: each would start in an overlay-booted copy of it."""
    proc = subprocess.run(["systemctl", "list-unit-files", "--state=enabled", "--no-legend"],
                          capture_output=True, text=True, timeout=30, check=False)
    units = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    return [u for u in units if u.endswith((".service", ".timer", ".socket"))]


class Container:
    """One booted container. ``boot()`` returns once systemd in it answers."""

    def __init__(self, name: str, network: Network, *, mask: list[str]) -> None:
        self.name = name
        self.network = network
        self.mask = mask
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/run"))
        self.root = self.workdir / "root"
        self.root.mkdir()
        self.console = self.workdir / "console.log"
        self._console: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid1 = 0

    def boot(self, timeout: float = 30.0) -> None:
        nspawn = ensure_nspawn()
        kernel_args = [f"systemd.mask={unit}" for unit in self.mask]
        inner = (f'mount --bind / "{self.root}" && mount -o remount,bind,ro "{self.root}" && '
                 f'exec "{nspawn}" -D "{self.root}" --volatile=overlay --register=no --keep-unit '
                 f'--machine={self.name} --console=read-only --quiet '
                 f'--network-namespace-path={self.network.netns_path} --boot '
                 + " ".join(kernel_args))
        # --console=read-only: the container's /dev/console (the system console, what EC2's
        # GetConsoleOutput returns on an instance) goes to console.log; tests read it there.
        self._console = self.console.open("wb")
        # A private mount namespace: the bind mount disappears with the last process in it.
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
            stdout=self._console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited ({self.proc.returncode}): {self.console_text()}")
            if not self.pid1:
                self.pid1 = self._find_pid1()
            if self.pid1 and Path(f"/proc/{self.pid1}/root/run/systemd/private").exists():
                break
            time.sleep(0.05)
        else:
            raise TimeoutError(f"container {self.name} did not boot in {timeout}s: {self.console_text()}")
        # systemd answers; wait for the boot to finish (D-Bus up, for systemd-run and friends)
        left = max(1.0, deadline - time.monotonic())
        state = self.run("systemctl", "is-system-running", "--wait", timeout=left).stdout.strip()
        if state not in ("running", "degraded"):
            raise RuntimeError(f"container {self.name} booted into state {state!r}: "
                               f"{self.systemctl('list-units', '--failed').stdout}")

    def _find_pid1(self) -> int:
        """The container's PID 1: the child `systemd` of the nspawn process."""
        assert self.proc is not None
        for pid in _descendants(self.proc.pid):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    status = Path(f"/proc/{pid}/status").read_text()
                    nspid = next((line.split()[-1] for line in status.splitlines()
                                  if line.startswith("NSpid:")), "")
                    if nspid == "1":
                        return pid
        return 0

    def console_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.console.read_text(errors="replace")[-4000:]
        return ""

    # ------------------------------------------------------------------ commands inside
    def run(self, *cmd: str, timeout: float = 60, check: bool = False,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["nsenter", "-t", str(self.pid1), "-a", "env", "-i", f"PATH={HOST_PATH}",
                               "LANG=C.UTF-8", *cmd], capture_output=True, text=True, timeout=timeout,
                              input=input_text, check=False)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def systemctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, "--property=" + ",".join(props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *args: str) -> str:
        return self.run("journalctl", "--no-pager", "-o", "cat", *args, timeout=60).stdout

    def write_file(self, path: str, text: str, mode: str = "0644") -> None:
        self.run("sh", "-c", f'mkdir -p "$(dirname "{path}")" && cat > "{path}" && chmod {mode} "{path}"',
                 input_text=text, check=True)

    # ------------------------------------------------------------------ the end
    def poweroff(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.pid1:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.run("systemctl", "poweroff", "--no-block", timeout=10)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def close(self) -> None:
        self.poweroff()
        if self._console is not None:
            self._console.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        children: list[int] = []
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    children += [int(c) for c in (task / "children").read_text().split()]
        out += children
        todo += children
    return out


@contextlib.contextmanager
def run_lock(timeout: float = 240.0) -> Iterator[IO[str]]:
    """One e2e run at a time on this machine."""
    with open(LOCK_FILE, "w") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another e2e run on this machine held {LOCK_FILE} for "
                                       f"{timeout:.0f}s") from None
                time.sleep(0.5)
        try:
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def new_run_id() -> str:
    return secrets.token_hex(3)
