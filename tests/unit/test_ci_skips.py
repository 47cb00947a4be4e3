"""In CI a skip fails the run (tests/conftest.py), also under pytest-xdist, and a test that
cannot run on this machine (tests/unit/test_units.py without systemd-analyze) is no exception.

Each case runs pytest in a child process: the hooks under test act at the end of a session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def pytest_run(*args: str, cwd: Path, ci: bool, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER")}
    env["PYTHONPATH"] = str(REPO)
    if ci:
        env["CI"] = "true"
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def suite_with_a_skip(tmp_path: Path) -> Path:
    """A tiny suite that uses the project's skip hooks: one test passes, one skips."""
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_runtest_logreport, pytest_sessionfinish  # noqa: F401\n")
    (tmp_path / "test_some.py").write_text(
        "import pytest\n\n"
        "def test_runs():\n    assert True\n\n"
        "def test_cannot_run_here():\n    pytest.skip('needs something this machine lacks')\n")
    return tmp_path


@pytest.mark.parametrize("workers", ["0", "1"])  # 1: an xdist worker, whose controller decides
def test_a_skip_fails_the_run_in_ci(suite_with_a_skip: Path, workers: str) -> None:
    proc = pytest_run("-n", workers, cwd=suite_with_a_skip, ci=True)
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED, proc.stdout + proc.stderr
    assert "1 test(s) skipped; in CI that is a failure" in proc.stdout
    assert "test_some.py::test_cannot_run_here" in proc.stdout


def test_outside_ci_a_skip_is_shown_with_its_reason(suite_with_a_skip: Path) -> None:
    proc = pytest_run("-n", "0", "-rs", cwd=suite_with_a_skip, ci=False)
    assert proc.returncode == pytest.ExitCode.OK, proc.stdout + proc.stderr
    assert "needs something this machine lacks" in proc.stdout


def test_the_unit_tests_of_the_units_fail_in_ci_without_systemd_analyze(tmp_path: Path) -> None:
    empty = tmp_path / "bin"  # a PATH with no systemd-analyze on it
    empty.mkdir()
    proc = pytest_run("-n", "0", str(REPO / "tests" / "unit" / "test_units.py"), cwd=REPO, ci=True,
                      path=str(empty))
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED, proc.stdout + proc.stderr
    assert "skipped; in CI that is a failure" in proc.stdout
    assert "tests/unit/test_units.py::" in proc.stdout
