"""The agent's log lines: one JSON object a line, written whole, secrets redacted."""

from __future__ import annotations

import json
from typing import Any

from spored import logs


class Writes:
    """A stream that keeps every write() call apart, as a pipe shared by two processes sees them."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return len(text)

    def flush(self) -> None:
        return

    def isatty(self) -> bool:
        return False


def test_each_line_is_one_write_with_its_newline() -> None:
    """The agent and its status-writer child share stdout: a line written in two parts (text, then
    newline) let the other process's line land between them, and both events were lost."""
    stream = Writes()
    logs.configure(json=True, stream=stream)  # type: ignore[arg-type]  # a stand-in for a pipe
    log = logs.get("spored")
    log.info("first.event", n=1)
    log.warning("second.event", token="secret-value")
    assert [call.count("\n") for call in stream.calls] == [1, 1]
    assert all(call.endswith("\n") for call in stream.calls)
    events: list[dict[str, Any]] = [json.loads(call) for call in stream.calls]
    assert [e["event"] for e in events] == ["first.event", "second.event"]
    assert events[1]["token"] == "[redacted]"
