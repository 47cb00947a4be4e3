"""`spored` commands through main(argv): stdout, stderr and exit codes."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spored.cli import EXIT_NO_STATUS, main
from spored.contract import format_timestamp
from spored.daemon import EXIT_CONFIG
from spored.events import EventQueue

# each test logs into its own buffer (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("agent_logs")


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "run").mkdir(mode=0o750)
    (tmp_path / "state").mkdir(mode=0o750)
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    return tmp_path


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spored.toml"
    path.write_text(text)
    return path


def test_complete_writes_the_marker(dirs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = dirs / "run" / "complete"
    cfg = write_config(dirs, f'completion_marker = "{marker}"\ncompletion_delay = "1m"\n')
    assert main(["--config", str(cfg), "complete", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["marker"] == str(marker) and out["delay"] == "1m"
    assert marker.exists()


def test_complete_refuses_a_world_writable_directory(dirs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shared = dirs / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    cfg = write_config(dirs, f'completion_marker = "{shared / "complete"}"\n')
    assert main(["--config", str(cfg), "complete"]) == 2
    err = capsys.readouterr().err
    assert "world-writable" in err and "completion_marker" in err
    assert not (shared / "complete").exists()


def test_complete_with_a_missing_directory_is_a_clear_error(dirs: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(dirs, f'completion_marker = "{dirs / "nope" / "complete"}"\n')
    assert main(["--config", str(cfg), "complete"]) == 2
    assert "nope" in capsys.readouterr().err


def test_status_without_an_agent(dirs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"]) == EXIT_NO_STATUS
    assert "is spored running" in capsys.readouterr().err


def status_file(dirs: Path, *, updated: datetime, deadline: datetime) -> None:
    (dirs / "run" / "status.json").write_text(json.dumps({
        "updated_at": format_timestamp(updated), "tick_seconds": 10, "instance_id": "i-0abc",
        "managed": True, "deadline": format_timestamp(deadline), "deadline_source": "spawn:expires-at",
        "idle": {"timeout": "1:00:00", "since": None, "signals": [
            {"name": "cpu_percent", "value": 42.0, "threshold": 5.0, "idle": False, "note": ""}]},
        "completion": {"completed_at": None, "action_at": None},
        "tags": {"source": "metadata", "last_refresh": format_timestamp(updated)},
        "last_error": None, "problems": ["invalid tag spawn:ttl: 'x' is not a duration"],
        "next": {"verb": "wait", "action": "terminate", "reason": "ttl-expired",
                 "at": format_timestamp(deadline), "why": "deadline from spawn:expires-at"},
        "done": {}, "dry_run": False}))


def test_status_reports_remaining_and_problems(dirs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(UTC)
    status_file(dirs, updated=now, deadline=now + timedelta(hours=2, seconds=30))
    assert main(["status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["remaining"].startswith("2h")
    assert data["stale"] is False
    assert main(["status"]) == 0
    text = capsys.readouterr().out
    assert "i-0abc" in text and "ttl-expired" in text and "cpu_percent" in text and "active" in text
    assert "invalid tag spawn:ttl" in text


def test_status_says_when_it_is_stale(dirs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(UTC)
    status_file(dirs, updated=now - timedelta(minutes=5), deadline=now + timedelta(hours=1))
    assert main(["status"]) == 0
    assert "STALE" in capsys.readouterr().out


def test_run_with_a_bad_config_exits_78(dirs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(dirs, 'tick = "soon"\n')
    assert main(["--config", str(cfg), "run"]) == EXIT_CONFIG
    assert "tick" in capsys.readouterr().out


def test_check_without_metadata_decides_nothing_and_writes_nothing(
        dirs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write_config(dirs, f'imds_endpoint = "http://127.0.0.1:{port}"\n')
    assert main(["--config", str(cfg), "check", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["next"]["verb"] == "none" and "identity" in data["next"]["why"]
    assert not list((dirs / "state").iterdir())
    assert not list((dirs / "run").iterdir())


def test_event_queue_urgent_first_and_coalesced() -> None:
    q = EventQueue()
    for event in ("tick", "tags", "tick", "due", "term", "tick"):
        q.put(event)
    assert [q.get(0.1) for _ in range(4)] == ["term", "due", "tick", "tags"]


def test_the_agent_does_not_import_boto3_until_it_needs_ec2() -> None:
    import subprocess
    import sys

    code = ("import sys, spored.cli, spored.daemon, spored.ec2, spored.actions; "
            "sys.exit(1 if 'boto3' in sys.modules or 'botocore' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0


def test_the_daemon_never_imports_rich(dirs: Path) -> None:
    """structlog imports rich when it is installed (as here, beside the controller); the daemon
    renders JSON only and keeps it out of its process."""
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write_config(dirs, f'imds_endpoint = "http://127.0.0.1:{port}"\n')
    status = dirs / "run" / "status.json"
    # SIGTERM once it wrote its first status (its signal handlers are in place), as systemd stops it
    code = ("import os, signal, sys, threading, time\n"
            "from spored import cli\n"
            "def stop():\n"
            "    end = time.monotonic() + 120\n"
            f"    while not os.path.exists({str(status)!r}) and time.monotonic() < end:\n"
            "        time.sleep(0.1)\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "threading.Thread(target=stop, daemon=True).start()\n"
            f"code = cli.main(['--config', {str(cfg)!r}, 'run'])\n"
            "print('RICH', sys.modules.get('rich') is not None, 'STRUCTLOG', 'structlog' in sys.modules,"
            " file=sys.stderr)\n"
            "sys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "RICH False STRUCTLOG True" in proc.stderr
    assert '"event": "agent.start"' in proc.stdout  # it did run, and logged JSON
