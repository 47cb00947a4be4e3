"""The README's install-and-launch path, run as written: every `$ ` line of its ``console`` blocks
marked ``<!-- tested: ... -->``, in order, from a wheel installed in a fresh virtual environment
outside the tree, against moto.

The commands come from README.md itself, so the README cannot drift from what works. Two lines
are run as what they mean on a machine with no network and no EC2:

- ``pipx install .`` (pipx: a virtual environment of its own, and pip installing the project into
  it) is the ``installed`` fixture: the wheel built from this tree, installed (not editable) with
  pip into a virtual environment in a temporary folder;
- ``spawn launch ...`` gets ``--no-wait``: under moto no machine boots, so no agent can report.

Everything else runs verbatim with ``bash -c`` in an empty folder, with a fresh HOME and the moto
server as the only AWS endpoint (``AWS_ENDPOINT_URL``), and must exit 0.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import boto3
import pytest

from tests.conftest import MotoServer
from tests.integration.conftest import installed_env

README = Path(__file__).resolve().parents[2] / "README.md"
REGION = "us-east-1"
# Building and installing the wheel, then pip building the agent bundle: minutes on a loaded machine.
# the installed wheel (a session fixture, minutes to build) is built once: one xdist worker
pytestmark = [pytest.mark.timeout(1800), pytest.mark.xdist_group("installed-wheel")]


MARK = "<!-- tested: tests/integration/test_readme_path.py runs this block -->"


def console_commands(text: str) -> list[str]:
    """The `$ ` lines of every ```console block marked as tested, in order (a trailing backslash
    continues a line)."""
    commands: list[str] = []
    pattern = rf"^{re.escape(MARK)}\n```console\n(.*?)^```"
    for block in re.findall(pattern, text, flags=re.DOTALL | re.MULTILINE):
        joined = block.replace("\\\n", " ")
        commands += [line[2:].strip() for line in joined.splitlines() if line.startswith("$ ")]
    return commands


def test_the_readme_shows_the_install_and_launch_path() -> None:
    commands = console_commands(README.read_text(encoding="utf-8"))
    assert commands[0] == "pipx install ."
    programs = [shlex.split(c)[:2] for c in commands]
    assert ["spawn", "doctor"] in programs
    assert ["spawn", "launch"] in programs
    assert programs.index(["spawn", "doctor"]) < programs.index(["spawn", "launch"])


def test_readme_path_runs_from_an_installed_wheel(installed: Path, aws: MotoServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    env = installed_env(installed, aws, home)
    ran: list[tuple[str, str]] = []
    for command in console_commands(README.read_text(encoding="utf-8")):
        if command == "pipx install .":
            continue  # the ``installed`` fixture
        run = command + " --no-wait" if shlex.split(command)[:2] == ["spawn", "launch"] else command
        proc = subprocess.run(["bash", "-c", run], capture_output=True, text=True, env=env,
                              cwd=work, timeout=900, check=False)
        assert proc.returncode == 0, (f"README: `$ {run}` exited {proc.returncode}\n"
                                      f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        ran.append((command, proc.stdout + proc.stderr))

    outputs = dict(ran)
    doctor = next(out for cmd, out in ran if cmd.startswith("spawn doctor"))
    for name in ("credentials", "region", "network", "ami", "ssh-key", "ssh-from", "permissions",
                 "bundle-bucket"):
        assert f"  {name}  " in doctor
    assert '"Statement"' in (work / "spawn-cli-policy.json").read_text()
    assert any(cmd.startswith("spawn launch") for cmd in outputs)
    # The path ends with the instance terminated in the (local) cloud.
    ec2 = boto3.client("ec2", region_name=REGION)
    states = {i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
              if {"Key": "spawn:managed", "Value": "true"} in i.get("Tags", [])}
    assert states and states <= {"shutting-down", "terminated"}, states


@pytest.mark.parametrize(("text", "expected"), [
    (f"{MARK}\n```console\n$ a b\n$ c \\\n  d\nout\n```\n```sh\n$ not run\n```\n"
     f"```console\n$ not marked\n```\n{MARK}\n```console\n$ e\n```\n",
     ["a b", "c    d", "e"]),
])
def test_console_commands_extraction(text: str, expected: list[str]) -> None:
    assert [" ".join(c.split()) for c in console_commands(text)] == [" ".join(e.split()) for e in expected]
