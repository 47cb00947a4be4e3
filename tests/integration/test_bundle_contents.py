"""The agent bundle as this installation builds it: what it installs, and that it is reproducible.

Built with pip from the package index pip is configured for, into the user's bundle cache (the
first run downloads the locked wheels; later runs reuse them).
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from controller import bundle

# Exactly what an instance gets: the agent and its runtime dependencies. Not the controller
# (spawn-spored), rich, shtab, the sandbox or moto.
AGENT_DISTRIBUTIONS = {
    "spored", "apscheduler", "tzlocal", "structlog", "requests", "urllib3", "idna", "certifi",
    "charset-normalizer", "boto3", "botocore", "jmespath", "python-dateutil", "six", "s3transfer",
}


@pytest.fixture(scope="module")
def built() -> bundle.Bundle:
    return bundle.ensure_bundle()


@pytest.fixture(scope="module")
def agent_python(built: bundle.Bundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bundle.install_agent(built.path, tmp_path_factory.mktemp("agent") / "venv")


def test_the_bundle_installs_the_agent_and_its_dependencies_only(agent_python: Path) -> None:
    code = ("import importlib.metadata as m, json; "
            "print(json.dumps(sorted(d.metadata['Name'] for d in m.distributions())))")
    out = subprocess.run([str(agent_python), "-c", code], capture_output=True, text=True, timeout=60,
                         check=True, cwd=agent_python.parent).stdout  # not the checkout's egg-info
    assert {bundle.canonical_name(n) for n in json.loads(out)} == AGENT_DISTRIBUTIONS
    assert AGENT_DISTRIBUTIONS - {"spored"} == {bundle.canonical_name(n) for n, _ in bundle.read_lock()}


def test_the_installed_agent_runs_without_the_controller(agent_python: Path) -> None:
    code = ("import importlib.util as u, sys; import spored.cli, spored.daemon; "
            "sys.exit(1 if u.find_spec('controller') or u.find_spec('rich') else 0)")
    subprocess.run([str(agent_python), "-c", code], timeout=60, check=True, cwd=agent_python.parent)
    spored = agent_python.parent / "spored"
    help_text = subprocess.run([str(spored), "--help"], capture_output=True, text=True, timeout=60,
                               check=True).stdout
    assert "run" in help_text and "complete" in help_text


def test_every_wheel_is_pure_python_and_matches_the_lock(built: bundle.Bundle) -> None:
    with tarfile.open(built.path) as tar:
        wheels = [m.name.rsplit("/", 1)[1] for m in tar.getmembers() if m.name.endswith(".whl")]
        manifest = json.loads(tar.extractfile(f"spored-bundle-{built.version}/bundle.json").read())  # type: ignore[union-attr]
    assert wheels and all(w.endswith(("-py3-none-any.whl", "-py2.py3-none-any.whl")) for w in wheels)
    assert manifest["platform"] == "any"
    assert manifest["locked"] == [f"{n}=={v}" for n, v in
                                  sorted(bundle.read_lock(), key=lambda p: bundle.canonical_name(p[0]))]


def test_two_builds_give_the_same_sha256(built: bundle.Bundle, tmp_path: Path) -> None:
    again = bundle.build_bundle(tmp_path / "again")  # downloads into a fresh folder
    assert again.sha256 == built.sha256
    assert (tmp_path / "again" / f"{again.path.name}.sha256").read_text() == \
        f"{again.sha256}  {again.path.name}\n"
