"""Exit codes live in one place (spored.exit_codes), each with its description, and both
programs' ``--help`` and documentation list every code they return."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from controller.cli import build_parser as spawn_parser
from spored import cli as spored_cli
from spored import daemon
from spored.exit_codes import AGENT_EXIT_DESCRIPTIONS, EXIT_DESCRIPTIONS, SPORED_STATUSES, AgentExit

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("code", "command"), [
    (spored_cli.EXIT_NO_STATUS, "spored status"),
    (spored_cli.EXIT_NOT_RECORDED, "spored complete"),
    (daemon.EXIT_RESTART, "spored run"),
    (daemon.EXIT_CONFIG, "spored run"),
])
def test_each_agent_code_is_an_agent_exit_described_for_its_command(code: int, command: str) -> None:
    assert isinstance(code, AgentExit)
    assert f"`{command}`" in AGENT_EXIT_DESCRIPTIONS[code]


def test_the_agent_codes_are_those_of_sysexits_h() -> None:
    # EX_UNAVAILABLE, EX_TEMPFAIL, EX_CONFIG; systemd/spored.service names 78 and 75 by number
    assert {c.name: int(c) for c in AgentExit} == {"NO_STATUS": 69, "TEMPFAIL": 75, "CONFIG": 78}


def _listed(help_text: str) -> set[int]:
    block = help_text.split("exit codes:", 1)[1]
    return {int(m) for m in re.findall(r"^  (\d+) ", block, flags=re.MULTILINE)}


def test_spored_help_lists_every_code_spored_returns() -> None:
    expected = {int(c) for c in SPORED_STATUSES} | {int(c) for c in AGENT_EXIT_DESCRIPTIONS}
    assert _listed(spored_cli.build_parser().format_help()) == expected


def test_spawn_help_lists_every_code_spawn_returns() -> None:
    assert _listed(spawn_parser().format_help()) == {int(c) for c in EXIT_DESCRIPTIONS}


def _int_exit_constants(path: Path) -> list[str]:
    """Module-level ``EXIT_* = <int>`` / ``EX_* = <int>`` assignments: an exit number defined here."""
    found = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if not isinstance(node, ast.Assign | ast.AnnAssign) or node.value is None:
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if (any(re.match(r"_?(EXIT|EX)_", n) for n in names) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, int)):
            found.append(f"{path}:{node.lineno} {', '.join(names)}")
    return found


def test_no_exit_number_is_defined_outside_the_exit_codes_module() -> None:
    found = [hit for package in ("spored", "controller") for path in sorted((ROOT / package).rglob("*.py"))
             if path != ROOT / "spored" / "exit_codes.py" for hit in _int_exit_constants(path)]
    assert not found, f"exit numbers defined outside spored/exit_codes.py: {found}"


def test_the_scan_sees_an_exit_number(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("EXIT_NOT_RECORDED = 75\nEXIT_OK = ExitStatus.OK\n")
    assert [hit.split(" ", 1)[1] for hit in _int_exit_constants(module)] == ["EXIT_NOT_RECORDED"]


def test_the_unit_stops_restarting_on_exactly_the_configuration_code() -> None:
    """systemd/spored.service names the agent's codes by number: it must agree with AgentExit
    (a configuration error is not retried; the repeated-failure exit is)."""
    unit = (ROOT / "systemd" / "spored.service").read_text(encoding="utf-8")
    prevent = re.findall(r"^RestartPreventExitStatus=(.*)$", unit, flags=re.MULTILINE)
    assert [int(code) for line in prevent for code in line.split()] == [AgentExit.CONFIG]
    assert re.search(r"^Restart=on-failure$", unit, flags=re.MULTILINE)  # so TEMPFAIL restarts
