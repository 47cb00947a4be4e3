"""The agent's loop survives failures and exits for a restart after MAX_SAME_FAILURES identical ones."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from spored import logs
from spored.config import Config
from spored.daemon import EXIT_RESTART, MAX_SAME_FAILURES, Agent


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure(json=True, stream=stream)
    yield stream
    logs.configure(json=True, stream=io.StringIO())


class BrokenTick(Agent):
    """An agent whose tick fails the same way every time (a bug, not a failing component)."""

    def tick(self) -> None:
        raise RuntimeError("the same bug every tick")


def test_identical_loop_failures_exit_75_for_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       log_lines: io.StringIO) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    cfg = Config(imds_endpoint="http://127.0.0.1:9", tick=timedelta(seconds=1), wall=False)
    agent = BrokenTick(cfg, tmp_path / "spored.toml")
    assert agent.run() == EXIT_RESTART
    text = log_lines.getvalue()
    assert text.count('"loop.failure"') == MAX_SAME_FAILURES and '"agent.exit_for_restart"' in text
