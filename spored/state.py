"""The agent's saved state: what it has already done this boot, and the last good tags.

One JSON file in ``$STATE_DIRECTORY`` (default /var/lib/spored), written atomically (temp file,
fsync, rename). Per-boot facts are keyed by the kernel's boot id: after a reboot or a stop/start
they start afresh, while the last good lifecycle tags carry over. A file that cannot be read is set
aside (``state.json.corrupt-<time>``) and reported, never fatal.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from spored import logs

STATE_FILE = "state.json"
log = logs.get("spored.state")


def state_dir() -> Path:
    return Path(os.environ.get("STATE_DIRECTORY", "/var/lib/spored").split(":")[0])


def runtime_dir() -> Path:
    return Path(os.environ.get("RUNTIME_DIRECTORY", "/run/spored").split(":")[0])


@dataclass(frozen=True)
class ActFailure:
    """The last failed attempt at a planned action. kind: denied | unreachable | error."""

    key: str
    kind: str
    since: datetime
    message: str


@dataclass(frozen=True)
class AgentState:
    boot_id: str = ""
    last_good_tags: dict[str, str] = field(default_factory=dict)
    # Per boot:
    idle_since: datetime | None = None
    completed_at: datetime | None = None
    warned: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()
    notices: tuple[str, ...] = ()
    done: dict[str, str] = field(default_factory=dict)
    failure: ActFailure | None = None

    def for_boot(self, boot_id: str) -> AgentState:
        if boot_id == self.boot_id:
            return self
        return AgentState(boot_id=boot_id, last_good_tags=dict(self.last_good_tags))


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def to_json(state: AgentState) -> str:
    return json.dumps(_encode(asdict(state)), indent=1, sort_keys=True)


def _when(value: Any) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        raise ValueError("naive timestamp in state")
    return moment


def from_json(text: str) -> AgentState:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("state is not an object")
    failure = data.get("failure")
    return AgentState(
        boot_id=str(data["boot_id"]),
        last_good_tags={str(k): str(v) for k, v in dict(data.get("last_good_tags", {})).items()},
        idle_since=_when(data.get("idle_since")),
        completed_at=_when(data.get("completed_at")),
        warned=tuple(str(v) for v in data.get("warned", [])),
        hooks=tuple(str(v) for v in data.get("hooks", [])),
        notices=tuple(str(v) for v in data.get("notices", [])),
        done={str(k): str(v) for k, v in dict(data.get("done", {})).items()},
        failure=None if failure is None else ActFailure(
            key=str(failure["key"]), kind=str(failure["kind"]),
            since=_when(failure["since"]) or datetime.fromtimestamp(0).astimezone(),
            message=str(failure["message"])),
    )


def write_atomic(path: Path, text: str, mode: int = 0o640, *, durable: bool = True) -> None:
    """Temp file + rename; ``durable`` also fsyncs (state: yes; the runtime status file: no)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class StateStore:
    def __init__(self, directory: Path, boot_id: str) -> None:
        self.path = directory / STATE_FILE
        self.boot_id = boot_id
        self.problem: str | None = None
        self._saved: str | None = None
        self._saved_state: AgentState | None = None

    def load(self, *, set_aside: bool = True) -> AgentState:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return AgentState(boot_id=self.boot_id)
        except OSError as exc:
            self.problem = f"{self.path}: cannot read: {exc.strerror}"
            log.error("state.unreadable", path=str(self.path), error=exc.strerror)
            return AgentState(boot_id=self.boot_id)
        try:
            state = from_json(text)
        except (ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_name(f"{STATE_FILE}.corrupt-{int(time.time())}")
            if set_aside:
                with contextlib.suppress(OSError):
                    os.replace(self.path, aside)
            self.problem = f"{self.path} was corrupt ({exc}); set aside as {aside.name}"
            log.error("state.corrupt", path=str(self.path), set_aside=str(aside), error=str(exc))
            return AgentState(boot_id=self.boot_id)
        return state.for_boot(self.boot_id)

    def save(self, state: AgentState) -> None:
        """Write the state if it changed since the last save (the steady state writes nothing and,
        compared as a value first, does not even encode it)."""
        state = replace(state, boot_id=self.boot_id)
        if state == self._saved_state:
            return
        text = to_json(state)
        if text != self._saved:
            write_atomic(self.path, text)
            self._saved = text
        self._saved_state = state
