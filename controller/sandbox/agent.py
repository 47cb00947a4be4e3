"""The sandbox's agent: the real `spored run`, as a separate process of the current user.

It gets the configuration launch rendered for the instance, with the sandbox's changes (short
intervals and warnings, no backstop, no wall unless asked, the completion marker in a private
temporary directory), its state and runtime directories in that directory, the local endpoint in
``AWS_ENDPOINT_URL``, the IMDS emulator in ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` and no static
credentials: like on EC2, it signs its calls with the role credentials the emulator serves.
Its JSON log lines (stdout) are read on a thread and handed over as dicts.

``AgentProcess`` is also how the tests and the benchmarks run the agent: they search its
events, wait for one (``wait_for``) or for its status file to say something (``wait_status``),
instead of sleeping.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from spored import config as agent_config

SANDBOX_WARNINGS = (timedelta(seconds=10), timedelta(seconds=5))


@dataclass(frozen=True)
class AgentDirs:
    """The agent's files under ``root``; ``state_dir`` and ``runtime_dir`` put its state or its
    runtime files (status, warning, requests) elsewhere - on an instance ``/run/spored`` is a
    tmpfs, and a benchmark puts them on one too."""

    root: Path
    state_dir: Path | None = None
    runtime_dir: Path | None = None

    @property
    def config(self) -> Path:
        return self.root / "etc" / "spored.toml"

    @property
    def drop_ins(self) -> Path:
        """``spored.d/`` beside the configuration file: read after it, in name order."""
        return self.config.parent / "spored.d"

    @property
    def state(self) -> Path:
        return self.state_dir if self.state_dir is not None else self.root / "state"

    @property
    def runtime(self) -> Path:
        return self.runtime_dir if self.runtime_dir is not None else self.root / "run"

    @property
    def marker(self) -> Path:
        return self.runtime / "complete"

    @property
    def status_file(self) -> Path:
        return self.runtime / "status.json"

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


def spored_command(*args: str, python: str | None = None) -> list[str]:
    """`spored ARGS...` with this installation's Python (the same code as the console script), or
    with ``python`` (another installation of the agent, e.g. one installed from its bundle)."""
    return [python or sys.executable, "-m", "spored.cli", *args]


class AgentProcess:
    """`spored run --config FILE` as a child process.

    Its parsed log lines go to ``lines`` (a queue, consumed by the sandbox) and are kept, the
    last ``HISTORY`` of them, for ``events`` and ``wait_for``."""

    HISTORY = 20_000

    def __init__(self, dirs: AgentDirs, env: Mapping[str, str], *, python: str | None = None,
                 cwd: Path | None = None) -> None:
        self.dirs = dirs
        self.python = python
        self.cwd = cwd
        self.env = {**env, "STATE_DIRECTORY": str(dirs.state), "RUNTIME_DIRECTORY": str(dirs.runtime),
                    "PYTHONUNBUFFERED": "1"}
        self.env.pop("NOTIFY_SOCKET", None)
        self.env.pop("WATCHDOG_USEC", None)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self.proc: subprocess.Popen[str] | None = None
        self._threads: list[threading.Thread] = []
        self._history: deque[dict[str, Any]] = deque(maxlen=self.HISTORY)
        self._changed = threading.Condition()
        self._stdout_closed = False

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the agent was not started")
        return self.proc.pid

    def start(self) -> int:
        self.proc = subprocess.Popen(
            spored_command("--config", str(self.dirs.config), "run", python=self.python),
            env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, bufsize=1, start_new_session=True)
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
            with self._changed:
                self._history.append(record)
                self._changed.notify_all()
            self.lines.put(record)
        with self._changed:
            self._stdout_closed = True
            self._changed.notify_all()

    def _read_stderr(self, stream: IO[str]) -> None:
        for raw in stream:
            self.stderr_tail.append(raw.rstrip("\n"))

    # -- what it said -----------------------------------------------------------------------
    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Its log events so far, in order; only those called ``name`` if given."""
        with self._changed:
            return [e for e in self._history if name is None or e.get("event") == name]

    def wait_for(self, name: str, timeout: float,
                 where: Callable[[dict[str, Any]], bool] = lambda _event: True) -> dict[str, Any]:
        """The first event ``name`` that ``where`` accepts, as soon as the agent logs it.

        Raises TimeoutError (with the end of the log) after ``timeout`` seconds, or as soon as
        the agent has exited without logging it."""
        end = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((e for e in self._history if e.get("event") == name and where(e)), None)
                if found is not None:
                    return found
                left = end - time.monotonic()
                if left <= 0 or self._stdout_closed:
                    break
                self._changed.wait(left)
        why = "exited" if self._stdout_closed else f"nothing within {timeout}s"
        raise TimeoutError(f"no {name!r} event from the agent ({why}):\n{self.log_tail()}")

    def status(self) -> dict[str, Any]:
        """What the agent believes (its status file), or {} before it wrote one."""
        try:
            return dict(json.loads(self.dirs.status_file.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return {}

    def wait_status(self, check: Callable[[dict[str, Any]], bool], timeout: float,
                    what: str = "the agent's status") -> dict[str, Any]:
        """The status as soon as ``check`` accepts it. The agent rewrites the file after every
        evaluation; it is read every 50 ms. TimeoutError after ``timeout`` or the agent's exit."""
        end = time.monotonic() + timeout
        while True:
            current = self.status()
            if current and check(current):
                return current
            if time.monotonic() >= end or self.exit_code() is not None:
                raise TimeoutError(f"{what}: not seen within {timeout}s (last {current!r}):\n"
                                   f"{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, count: int = 40) -> str:
        """The last ``count`` events and stderr lines, for a failure message."""
        with self._changed:
            events = list(self._history)[-count:]
        return "\n".join([json.dumps(e) for e in events] + list(self.stderr_tail))

    # -- its process ------------------------------------------------------------------------
    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def send_signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """Its exit code, once it has exited and its output has been read."""
        if self.proc is None:
            raise RuntimeError("the agent was not started")
        code = self.proc.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=timeout)
        return code

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
