"""Saved state: atomic, keyed by boot id, corruption set aside and reported."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from spored.state import ActFailure, AgentState, StateStore

T = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


# each test logs into its own buffer (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("agent_logs")


def full_state(boot: str) -> AgentState:
    return AgentState(boot_id=boot, last_good_tags={"spawn:managed": "true", "spawn:ttl": "1h"},
                      idle_since=T, completed_at=T, warned=("a/10m",), hooks=("k",), notices=("spot-1",),
                      done={"ttl-expired@x": "2026-11-28T12:00:00Z"},
                      failure=ActFailure("ttl-expired@x", "denied", T, "AccessDenied"))


def test_round_trip_same_boot(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "boot-1")
    store.save(full_state("boot-1"))
    assert StateStore(tmp_path, "boot-1").load() == full_state("boot-1")
    assert not list(tmp_path.glob(".state.json.*"))  # no temp files left behind


def test_new_boot_keeps_only_last_good_tags(tmp_path: Path) -> None:
    StateStore(tmp_path, "boot-1").save(full_state("boot-1"))
    loaded = StateStore(tmp_path, "boot-2").load()
    assert loaded == AgentState(boot_id="boot-2", last_good_tags={"spawn:managed": "true", "spawn:ttl": "1h"})


def test_corrupt_file_is_set_aside_and_reported(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"boot_id": "boot-1", "idle_since": "yesterday"')
    store = StateStore(tmp_path, "boot-1")
    assert store.load() == AgentState(boot_id="boot-1")
    assert store.problem and "corrupt" in store.problem
    aside = list(tmp_path.glob("state.json.corrupt-*"))
    assert len(aside) == 1 and "yesterday" in aside[0].read_text()
    assert not (tmp_path / "state.json").exists()
    store.save(AgentState(boot_id="boot-1"))
    assert StateStore(tmp_path, "boot-1").load() == AgentState(boot_id="boot-1")


def test_naive_timestamps_are_corruption(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"boot_id": "b", "completed_at": "2026-11-28T12:00:00"}')
    store = StateStore(tmp_path, "b")
    assert store.load().completed_at is None
    assert store.problem


def test_read_only_load_leaves_a_corrupt_file_in_place(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("not json")
    store = StateStore(tmp_path, "b")
    store.load(set_aside=False)
    assert (tmp_path / "state.json").read_text() == "not json"


def test_missing_directory_is_created_on_save(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "var" / "lib" / "spored", "b")
    assert store.load() == AgentState(boot_id="b")
    store.save(AgentState(boot_id="b", completed_at=T))
    assert StateStore(tmp_path / "var" / "lib" / "spored", "b").load().completed_at == T
