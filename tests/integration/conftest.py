"""Shared by the tests that run spawn the way users install it: the wheel built from this tree,
installed (not editable) into a fresh virtual environment outside the tree, once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MotoServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ``bin`` directory of a venv holding the installed wheel (its dependencies from the pip
    cache or the index pip is configured for, pinned by constraints.txt)."""
    base = tmp_path_factory.mktemp("installed-spawn")
    wheels = base / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
                            str(REPO)], capture_output=True, text=True, timeout=600, check=False, cwd=base)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(wheels.glob("spawn_spored-*.whl"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                              "--disable-pip-version-check", "-c", str(REPO / "constraints.txt"), str(wheel)],
                             capture_output=True, text=True, timeout=900, check=False, cwd=base)
    assert install.returncode == 0, install.stderr[-3000:]
    yield venv / "bin"


def installed_env(bin_dir: Path, aws: MotoServer, home: Path) -> dict[str, str]:
    """An environment like a new user's: a fresh HOME and caches, the installed venv first on PATH,
    fake credentials, and the moto server as the only AWS endpoint."""
    keep = ("LANG", "LC_ALL", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CERT",
            "PIP_DEFAULT_TIMEOUT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update({
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "XDG_CONFIG_HOME": str(home / ".config"),
        "AWS_ENDPOINT_URL": aws.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "SPAWN_CHECKIP_URL": os.environ["SPAWN_CHECKIP_URL"],  # loopback (tests/conftest.py): no internet
        # pip's cache and configuration stay the user's: the index they already use
        "PIP_CACHE_DIR": str(Path.home() / ".cache" / "pip"),
        "PIP_CONFIG_FILE": os.environ.get("PIP_CONFIG_FILE", "/etc/pip.conf"),
    })
    return env
