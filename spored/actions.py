"""What the agent does to the world: EC2 actions, warnings, the pre-stop hook, the power-off request.

The agent runs unprivileged; the OS power-off (the backstop) is *requested* by writing
``$RUNTIME_DIRECTORY/private/poweroff``, which a systemd path unit (spored-poweroff.path) acts on.

Only user ``spored`` can make or block that request. ``$RUNTIME_DIRECTORY`` (/run/spored) is
group-writable, so that members of group ``spored`` can signal completion, and sticky (mode 1770):
they may create entries there but not rename or remove the agent's. The request lives one level
down in ``private/``, a directory the agent makes itself with mode 0700, so nobody else can put
anything in it. Whatever else is found under that name (a directory, link or file planted by
someone else, e.g. while the agent restarted) is moved aside first: the owner of a sticky
directory may rename any entry in it.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from spored import failsafe, logs
from spored.contract import Action, Reason, format_timestamp
from spored.ec2 import HIBERNATE_REFUSED_CODES, Ec2, Ec2CallError
from spored.state import write_atomic

log = logs.get("spored.actions")

WARNING_FILE = "warning"
POWEROFF_FILE = "poweroff"
PRIVATE_DIR = "private"


def execute(ec2: Ec2, instance_id: str, action: Action, *, hibernate_fallback: Action) -> Action:
    """Carry out ``action`` on the instance; returns what was actually done."""
    if action is Action.TERMINATE:
        ec2.terminate(instance_id)
        return action
    if action is Action.STOP:
        ec2.stop(instance_id)
        return action
    try:
        ec2.stop(instance_id, hibernate=True)
        return action
    except Ec2CallError as exc:
        if exc.code not in HIBERNATE_REFUSED_CODES:
            raise
        log.warning("action.hibernate_refused", code=exc.code, fallback=str(hibernate_fallback))
    return execute(ec2, instance_id, hibernate_fallback, hibernate_fallback=Action.STOP)


def wall(message: str) -> None:
    """Tell logged-in users. Best effort: a missing ``wall`` is logged, never fatal."""
    try:
        subprocess.run(["wall"], input=message + "\n", text=True, timeout=5, check=False,
                       capture_output=True)
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("warning.wall_failed", error=type(exc).__name__)


def write_warning(runtime: Path, *, action: Action | str, reason: Reason, at: datetime, message: str) -> Path:
    path = runtime / WARNING_FILE
    write_atomic(path, json.dumps({"action": str(action), "reason": str(reason),
                                   "at": format_timestamp(at), "message": message}) + "\n", mode=0o644)
    return path


def clear_warning(runtime: Path) -> None:
    with contextlib.suppress(OSError):
        (runtime / WARNING_FILE).unlink()


def private_dir(runtime: Path) -> Path:
    """``runtime/private``: a directory of this user's, mode 0700, made if absent. Anything else
    found there is moved aside (``.planted-private-<ns>``) and logged. Raises OSError if it cannot."""
    path = runtime / PRIVATE_DIR
    uid = os.geteuid()
    for _ in range(3):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        found = os.lstat(path)
        if stat.S_ISDIR(found.st_mode) and found.st_uid == uid:
            if stat.S_IMODE(found.st_mode) != 0o700:
                os.chmod(path, 0o700)
            return path
        aside = runtime / f".planted-{PRIVATE_DIR}-{time.time_ns()}"
        os.rename(path, aside)
        log.warning("runtime.planted_entry_moved", path=str(path), moved_to=str(aside),
                    owner_uid=found.st_uid, kind=stat.filemode(found.st_mode))
    raise OSError(f"{path}: something keeps replacing it")


def request_poweroff(runtime: Path, *, reason: str) -> Path:
    path = private_dir(runtime) / POWEROFF_FILE
    write_atomic(path, json.dumps({"requested_at": format_timestamp(datetime.now(UTC)),
                                   "reason": reason}) + "\n", mode=0o644)
    return path


def request_failsafe(runtime: Path, at: datetime | None) -> Path:
    """Ask the root-side ``spored-failsafe.path`` to re-arm the OS failsafe at ``at`` (None: disarm,
    the instance is not managed). The request is a file the agent user owns; see docs/failsafe.md."""
    path = runtime / failsafe.REQUEST_FILE
    write_atomic(path, failsafe.request_text(at), mode=0o644, durable=False)
    return path


def console(line: str) -> None:
    """One line for the system console: the unit sends the agent's stderr to the journal and the
    console (``StandardError=journal+console``); the controller reads it with GetConsoleOutput."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


class HookRun:
    """A pre-stop hook started in the background and killed when its time is up."""

    def __init__(self, command: str, *, until: datetime, env: dict[str, str]) -> None:
        self.command = command
        self.started_at = time.time()
        self.timeout = max(0.0, (until - datetime.now(UTC)).total_seconds())
        self.returncode: int | None = None
        full_env = {**os.environ, **env}
        self._proc = subprocess.Popen([command], env=full_env, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        self._thread = threading.Thread(target=self._wait, name="pre-stop-hook", daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        try:
            self.returncode = self._proc.wait(timeout=self.timeout)
            log.info("hook.finished", command=self.command, returncode=self.returncode,
                     seconds=round(time.time() - self.started_at, 2))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self._proc.pid, 15)
                self.returncode = self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                os.killpg(self._proc.pid, 9)
                self.returncode = self._proc.wait()
            log.warning("hook.timeout", command=self.command, timeout_s=round(self.timeout, 1))

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


def start_hook(command: str, *, reason: Reason, action: str, until: datetime) -> HookRun | None:
    if not command:
        return None
    try:
        run = HookRun(command, until=until, env={
            "SPORED_REASON": reason.value, "SPORED_ACTION": action,
            "SPORED_DEADLINE": format_timestamp(until)})
    except OSError as exc:
        log.error("hook.failed_to_start", command=command, error=str(exc))
        return None
    log.info("hook.started", command=command, reason=str(reason), until=format_timestamp(until),
             timeout_s=round(run.timeout, 1))
    return run
