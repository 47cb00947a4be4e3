"""The sandbox's agent: the real `spored run`, as a separate process of the current user.

It gets the configuration launch rendered for the instance, with the sandbox's changes (short
intervals and warnings, no backstop, no wall unless asked, the completion marker in a private
temporary directory), its state and runtime directories in that directory, the local endpoint in
``AWS_ENDPOINT_URL``, the IMDS emulator in ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` and no static
credentials: like on EC2, it signs its calls with the role credentials the emulator serves.
Its JSON log lines (stdout) are read on a thread and handed over as dicts.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from spored import config as agent_config

SANDBOX_WARNINGS = (timedelta(seconds=10), timedelta(seconds=5))


@dataclass(frozen=True)
class AgentDirs:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "etc" / "spored.toml"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def runtime(self) -> Path:
        return self.root / "run"

    @property
    def marker(self) -> Path:
        return self.runtime / "complete"

    def create(self) -> None:
        for path in (self.config.parent, self.state, self.runtime):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o700)


def sandbox_config(launch_toml: str, dirs: AgentDirs, *, imds_url: str, ec2_endpoint: str,
                   wall: bool) -> agent_config.Config:
    """The configuration launch rendered, with the sandbox's changes; returns the result."""
    base = agent_config.parse(launch_toml, source="launch config")
    second = timedelta(seconds=1)
    return replace(
        base,
        imds_endpoint=imds_url,
        ec2_endpoint=ec2_endpoint,
        tick=second,
        spot_poll=second,
        tag_refresh=2 * second,
        tag_refresh_api=2 * second,
        completion_delay=3 * second,
        pre_stop_timeout=5 * second,
        warn_at=SANDBOX_WARNINGS,
        completion_marker=str(dirs.marker),
        backstop=False,
        wall=wall,
    )


def changes(launch_toml: str, sandbox: agent_config.Config) -> dict[str, tuple[str, str]]:
    """What the sandbox changed in launch's configuration: {key: (launch, sandbox)}."""
    base = agent_config.parse(launch_toml, source="launch config")
    out: dict[str, tuple[str, str]] = {}
    for name in vars(base):
        before, after = getattr(base, name), getattr(sandbox, name)
        if before != after:
            out[name] = (_show(before), _show(after))
    return out


def _show(value: Any) -> str:
    from spored.contract import format_duration

    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, tuple):
        return ",".join(_show(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def spored_command(*args: str) -> list[str]:
    """`spored ARGS...` with this installation's Python (the same code as the console script)."""
    return [sys.executable, "-m", "spored.cli", *args]


class AgentProcess:
    """`spored run --config FILE` as a child process; ``lines`` receives its parsed log lines."""

    def __init__(self, dirs: AgentDirs, env: Mapping[str, str]) -> None:
        self.dirs = dirs
        self.env = {**env, "STATE_DIRECTORY": str(dirs.state), "RUNTIME_DIRECTORY": str(dirs.runtime),
                    "PYTHONUNBUFFERED": "1"}
        self.env.pop("NOTIFY_SOCKET", None)
        self.env.pop("WATCHDOG_USEC", None)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self.proc: subprocess.Popen[str] | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> int:
        self.proc = subprocess.Popen(
            spored_command("--config", str(self.dirs.config), "run"),
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, start_new_session=True)
        assert self.proc.stdout is not None and self.proc.stderr is not None  # noqa: S101 - PIPE above
        for target, stream in ((self._read_stdout, self.proc.stdout),
                               (self._read_stderr, self.proc.stderr)):
            thread = threading.Thread(target=target, args=(stream,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self.proc.pid

    def _read_stdout(self, stream: IO[str]) -> None:
        for raw in stream:
            line = raw.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = {"event": "output", "text": line}
            if not isinstance(record, dict):
                record = {"event": "output", "text": line}
            self.lines.put(record)

    def _read_stderr(self, stream: IO[str]) -> None:
        for raw in stream:
            self.stderr_tail.append(raw.rstrip("\n"))

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (the agent exits 0 on it), then SIGKILL after ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=2)
        return self.proc.returncode


def signal_completion(dirs: AgentDirs, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`spored complete`, as the workload would run it, against the sandbox agent's marker."""
    return subprocess.run(
        spored_command("--config", str(dirs.config), "complete", "--json"),
        env={**env, "RUNTIME_DIRECTORY": str(dirs.runtime), "STATE_DIRECTORY": str(dirs.state)},
        capture_output=True, text=True, timeout=30, check=False)


def write_config(cfg: agent_config.Config, dirs: AgentDirs) -> None:
    dirs.config.write_text(agent_config.render(cfg), encoding="utf-8")
    os.chmod(dirs.config, 0o600)
