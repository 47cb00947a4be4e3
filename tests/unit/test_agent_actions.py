"""Actions: hibernate fallback, warning and power-off request files, the pre-stop hook's timeout."""

from __future__ import annotations

import json
import time
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
    assert request == tmp_path / "poweroff"
    assert json.loads(request.read_text())["reason"] == "terminate refused for 5m"


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
