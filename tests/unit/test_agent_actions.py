"""Actions: hibernate fallback, warning and power-off request files, the pre-stop hook's timeout."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from spored import actions
from spored.contract import Action, Reason
from spored.ec2 import PERMISSIONS, Ec2, Ec2CallError
from spored.errors import AwsError


class RecordingEc2(Ec2):
    """The EC2 adapter with the wire replaced: records operations, refuses what it is told to."""

    def __init__(self, refuse: dict[tuple[str, bool], str]) -> None:
        super().__init__("us-east-1")
        self.refuse = refuse
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def _call(self, operation: str, method: str, **params: Any) -> Any:
        assert operation in PERMISSIONS  # every operation declares its IAM action
        self.sent.append((operation, params))
        code = self.refuse.get((operation, bool(params.get("Hibernate"))))
        if code:
            kind = "denied" if code == "UnauthorizedOperation" else "error"
            raise Ec2CallError(operation, kind, code, AwsError(code, aws_code=code))
        return {}


def test_hibernate_refused_falls_back_to_stop() -> None:
    ec2 = RecordingEc2({("StopInstances", True): "UnsupportedHibernationConfiguration"})
    done = actions.execute(ec2, "i-0abc", Action.HIBERNATE, hibernate_fallback=Action.STOP)
    assert done is Action.STOP
    assert [(op, p.get("Hibernate")) for op, p in ec2.sent] == [("StopInstances", True),
                                                                ("StopInstances", False)]


def test_hibernate_refused_falls_back_to_terminate_when_configured() -> None:
    ec2 = RecordingEc2({("StopInstances", True): "UnsupportedOperation"})
    assert actions.execute(ec2, "i-0abc", Action.HIBERNATE,
                           hibernate_fallback=Action.TERMINATE) is Action.TERMINATE
    assert ec2.sent[-1] == ("TerminateInstances", {"InstanceIds": ["i-0abc"]})


def test_denied_hibernate_does_not_fall_back() -> None:
    ec2 = RecordingEc2({("StopInstances", True): "UnauthorizedOperation"})
    with pytest.raises(Ec2CallError) as info:
        actions.execute(ec2, "i-0abc", Action.HIBERNATE, hibernate_fallback=Action.TERMINATE)
    assert info.value.kind == "denied"
    assert len(ec2.sent) == 1


def test_terminate_targets_only_the_given_instance() -> None:
    ec2 = RecordingEc2({})
    actions.execute(ec2, "i-0abc", Action.TERMINATE, hibernate_fallback=Action.STOP)
    assert ec2.sent == [("TerminateInstances", {"InstanceIds": ["i-0abc"]})]


def test_warning_and_poweroff_files(tmp_path: Path) -> None:
    at = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)
    path = actions.write_warning(tmp_path, action=Action.TERMINATE, reason=Reason.TTL_EXPIRED, at=at,
                                 message="this instance will terminate at 17:00Z")
    assert json.loads(path.read_text()) == {"action": "terminate", "reason": "ttl-expired",
                                            "at": "2026-11-28T17:00:00Z",
                                            "message": "this instance will terminate at 17:00Z"}
    actions.clear_warning(tmp_path)
    assert not path.exists()
    request = actions.request_poweroff(tmp_path, reason="terminate refused for 5m")
    assert request == tmp_path / "private" / "poweroff"
    assert json.loads(request.read_text())["reason"] == "terminate refused for 5m"
    assert stat.S_IMODE((tmp_path / "private").lstat().st_mode) == 0o700


def _planted_link(runtime: Path) -> None:
    elsewhere = runtime.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "poweroff").write_text("forged")
    (runtime / "private").symlink_to(elsewhere)


def _planted_file(runtime: Path) -> None:
    (runtime / "private").write_text("blocks mkdir")


def _planted_foreign_dir(runtime: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("planting a directory of another user needs root")
    planted = runtime / "private"
    planted.mkdir(mode=0o777)
    (planted / "poweroff").mkdir()  # would block the rename of the agent's request
    os.chown(planted, 65534, 65534)


@pytest.mark.parametrize("plant", [_planted_link, _planted_file, _planted_foreign_dir],
                         ids=["link", "file", "foreign-dir"])
def test_whatever_is_planted_where_the_request_goes_is_moved_aside(plant: Callable[[Path], None],
                                                                   tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir()
    plant(runtime)
    request = actions.request_poweroff(runtime, reason="backstop")
    private = (runtime / "private").lstat()
    assert stat.S_ISDIR(private.st_mode) and private.st_uid == os.geteuid()
    assert stat.S_IMODE(private.st_mode) == 0o700
    assert json.loads(request.read_text())["reason"] == "backstop"
    aside = [p.name for p in runtime.iterdir() if p.name != "private"]
    assert len(aside) == 1 and aside[0].startswith(".planted-private-")


def test_the_agents_own_directory_is_kept_and_tightened(tmp_path: Path) -> None:
    (tmp_path / "private").mkdir(mode=0o755)
    (tmp_path / "private").chmod(0o775)
    assert actions.private_dir(tmp_path) == tmp_path / "private"
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["private"]


def test_hook_is_killed_when_its_time_is_up(tmp_path: Path) -> None:
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\necho \"$SPORED_REASON\" > {tmp_path}/reason\nsleep 30\n")
    hook.chmod(0o755)
    begin = time.monotonic()
    run = actions.start_hook(str(hook), reason=Reason.SPOT_INTERRUPTION, action="terminate",
                             until=datetime.now(UTC) + timedelta(seconds=1))
    assert run is not None
    run.join(timeout=10)
    assert not run.running
    assert run.returncode is not None and run.returncode != 0
    assert time.monotonic() - begin < 8
    assert (tmp_path / "reason").read_text().strip() == "spot-interruption"


def test_missing_hook_is_reported_not_raised(tmp_path: Path) -> None:
    assert actions.start_hook(str(tmp_path / "nope"), reason=Reason.TTL_EXPIRED, action="terminate",
                              until=datetime.now(UTC) + timedelta(seconds=5)) is None
