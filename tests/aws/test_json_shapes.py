"""Every command's --json output is one JSON object with the top-level keys docs/json.md lists.

Table-driven: ``CASES`` says how to run each command (against the moto server, on one instance
launched here); the expected keys come from the table in docs/json.md, so the docs and the code
cannot drift apart. A command the parser has but neither table covers fails the test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controller.cli import build_parser, main
from controller.cli_help import subcommands
from tests.conftest import MotoServer

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", ' \
         '"Resource": "arn:aws:s3:::my-bucket/*"}]}'
# Commands whose --json is not one object, with the reason (documented in docs/json.md).
STREAMS = {"sandbox": "one JSON event per line as the lifecycle happens (tests/integration/test_sandbox.py)"}
# Parent commands whose --json is that of a subcommand (``spawn bundle`` = ``spawn bundle show``).
GROUPS = {"config", "iam", "bundle", "defaults"}


def documented() -> dict[str, set[str]]:
    text = (REPO / "docs" / "json.md").read_text()
    table = text.split("<!-- json-shapes: command | top-level keys -->", 1)[1]
    table = table.split("<!-- /json-shapes -->")[0]
    shapes = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`spawn "):
            shapes[cells[0].strip("`").removeprefix("spawn ")] = set(re.findall(r"`([^`]+)`", cells[1]))
    return shapes


@pytest.fixture
def world(aws: MotoServer, home: Path, bundle: Path, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    (home / ".ssh").mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    policy = tmp_path / "policy.json"
    policy.write_text(POLICY)
    # the defaults file gives the bundle to launches that name none (spawn selftest)
    (tmp_path / "config" / "spawn").mkdir(parents=True)
    (tmp_path / "config" / "spawn" / "config.toml").write_text(f'agent-bundle = "{bundle}"\n')
    yield {"bundle": str(bundle), "policy": str(policy), "tmp": str(tmp_path)}


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, object]:
    code = main([*argv, "--json"]) if argv[0] != "config" else main([*argv[:3], "--json", *argv[3:]])
    out = capsys.readouterr().out
    # spawn doctor exits 5 when a check would block a launch: here, what moto can't answer
    assert code == 0 or (argv[0] == "doctor" and code == 5), (argv, out)
    lines = out.strip().splitlines()
    assert len(lines) == 1, f"{argv}: not one JSON line: {out[:500]}"
    value = json.loads(lines[0])
    assert isinstance(value, dict), f"{argv}: not a JSON object"
    return value


def test_every_command_is_documented_and_covered() -> None:
    shapes = documented()
    for path, _help, _parser in subcommands(build_parser()):
        if path in STREAMS or path in GROUPS:
            continue
        assert path in shapes, f"`spawn {path} --json` is not in docs/json.md"
        assert path in CASES or path in SLOW, f"`spawn {path} --json` has no case in this test"


def test_the_error_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extend", "i-0123456789abcdef0", "soon", "--json"]) == 2
    error = json.loads(capsys.readouterr().out)
    assert {"error", "message"} <= set(error) <= {"error", "message", "hint"}


CASES: dict[str, Callable[[dict[str, str]], list[str]]] = {
    "launch --dry-run": lambda w: ["launch", "-t", "t3.micro", "--ttl", "2h", "--region", REGION,
                                   "--agent-bundle", w["bundle"], "--dry-run"],
    "launch": lambda w: ["launch", "-t", "t3.micro", "--ttl", "2h", "--region", REGION, "--name", "shapes",
                         "--hibernate", "--agent-bundle", w["bundle"], "--no-wait"],
    "list": lambda w: ["list", "--region", REGION],
    "status": lambda w: ["status", w["id"], "--region", REGION],
    "extend": lambda w: ["extend", w["id"], "+1h", "--region", REGION],
    "config list": lambda w: ["config", w["id"], "list", "--region", REGION],
    "config get": lambda w: ["config", w["id"], "get", "ttl", "--region", REGION],
    "config set": lambda w: ["config", w["id"], "set", "idle-timeout", "45m", "--region", REGION],
    "connect": lambda w: ["connect", w["id"], "--print", "--region", REGION],
    "stop": lambda w: ["stop", w["id"], "--region", REGION],
    "start": lambda w: ["start", w["id"], "--region", REGION],
    "hibernate": lambda w: ["hibernate", w["id"], "--region", REGION],
    "terminate": lambda w: ["terminate", w["id"], "--yes", "--region", REGION],
    "iam templates": lambda w: ["iam", "templates"],
    "iam show": lambda w: ["iam", "show", "s3:ReadOnly@my-bucket"],
    "iam agent-policy": lambda w: ["iam", "agent-policy"],
    "iam lint": lambda w: ["iam", "lint", w["policy"]],
    "iam cli-policy": lambda w: ["iam", "cli-policy"],
    "iam roles": lambda w: ["iam", "roles", "--region", REGION],
    "iam cleanup": lambda w: ["iam", "cleanup", "--region", REGION],
    "bundle show": lambda w: ["bundle", "show"],
    "defaults show": lambda w: ["defaults", "show"],
    "defaults path": lambda w: ["defaults", "path"],
    "completion": lambda w: ["completion", "bash"],
    "doctor": lambda w: ["doctor", "--region", REGION],
    "iam setup": lambda w: ["iam", "setup", "--dry-run"],
    "selftest --dry-run": lambda w: ["selftest", "--dry-run", "--region", REGION],
}
# Not run here: building a bundle takes pip and minutes; tests/integration/test_install_wheel.py
# runs `spawn bundle build --json` and `spawn bundle write --json` from the installed wheel.
SLOW = {"bundle build", "bundle write",
        "selftest"}  # a whole run (minutes): tests/integration/test_selftest.py checks its report
ORDER = ["launch --dry-run", "launch", "list", "status", "extend", "config list", "config get",
         "config set", "connect", "stop", "start", "hibernate", "terminate"]


def test_every_command_prints_its_documented_shape(world: dict[str, str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    shapes = documented()
    names = ORDER + sorted(set(CASES) - set(ORDER))
    wrong = []
    for name in names:
        result = run(capsys, CASES[name](world))
        if set(result) != shapes[name]:
            wrong.append(f"spawn {name}: {sorted(result)} != docs {sorted(shapes[name])}")
        if name == "launch":
            world["id"] = str(result["instances"][0]["instance_id"])  # type: ignore[index]
    assert not wrong, "\n".join(wrong)
