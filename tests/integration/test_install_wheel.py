"""Install spawn the way users do, and launch: the built wheel in a fresh venv outside the tree.

One venv per test session (building it takes a minute or two; the ``installed`` fixture of
tests/integration/conftest.py, shared with the README's install-path test): ``pip wheel . --no-deps``,
then ``pip install`` of that wheel (not editable) into a venv in a temporary folder, its
dependencies from the pip cache or the index pip is configured for. Every command runs from a folder outside
the repository with no source tree on sys.path, against the moto server (AWS_ENDPOINT_URL), with
no --agent-bundle: the bundle is built by the installed spawn from its own files, into a fresh
cache.
"""

from __future__ import annotations

import base64
import email
import gzip
import json
import os
import re
import subprocess
from pathlib import Path

import boto3
import pytest

from controller import bundle as dev_bundle
from tests.conftest import MotoServer

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
# Building and installing the wheel, then pip building the bundle: minutes on a loaded machine.
# the installed wheel (a session fixture, minutes to build) is built once: one xdist worker
pytestmark = [pytest.mark.timeout(1800), pytest.mark.xdist_group("installed-wheel")]


def _env(aws: MotoServer, home: Path) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS",
            "PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_CONFIG_FILE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update({
        "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"), "XDG_CONFIG_HOME": str(home / "config"),
        "AWS_ENDPOINT_URL": aws.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing", "AWS_REGION": REGION, "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
        # pip's own cache and configuration stay the user's (the index they already use)
        "PIP_CACHE_DIR": str(Path.home() / ".cache" / "pip"),
        "PIP_CONFIG_FILE": os.environ.get("PIP_CONFIG_FILE", "/etc/pip.conf"),
    })
    return env


def spawn(bin_dir: Path, env: dict[str, str], cwd: Path, *argv: str) -> dict[str, object]:
    proc = subprocess.run([str(bin_dir / "spawn"), *argv], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=900, check=False)
    assert proc.returncode == 0, f"spawn {' '.join(argv)}: exit {proc.returncode}\n{proc.stderr[-4000:]}"
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def user_data_sha256(instance_id: str) -> str:
    ec2 = boto3.client("ec2", region_name=REGION)
    raw = base64.b64decode(ec2.describe_instance_attribute(InstanceId=instance_id,
                                                           Attribute="userData")["UserData"]["Value"])
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    parts = [p.get_payload(decode=True) for p in email.message_from_bytes(raw).walk() if not p.is_multipart()]
    text = "".join(p.decode(errors="replace") for p in parts if isinstance(p, bytes))
    found = re.findall(r"BUNDLE_SHA256='([0-9a-f]{64})'", text)
    assert len(found) == 1, text[:2000]
    return str(found[0])


def test_the_wheel_carries_the_bundle_inputs_as_files(installed: Path) -> None:
    code = "import controller, pathlib; print(pathlib.Path(controller.__file__).parent)"
    site = subprocess.run([str(installed / "python"), "-c", code], capture_output=True, text=True,
                          timeout=60, check=True, cwd=installed).stdout.strip()
    data = Path(site) / "bundle_files"
    for name in ("install.sh", "agent.lock", "systemd.md", "systemd/spored.service",
                 "systemd/spored-poweroff.path", "systemd/spored-poweroff.service"):
        path = data / name
        assert path.is_file() and not path.is_symlink(), name
    assert (data / "install.sh").read_bytes() == (REPO / "packaging" / "install.sh").read_bytes()
    assert str(REPO) not in site


def test_launch_from_the_installed_wheel_builds_and_uses_its_own_bundle(
        installed: Path, aws: MotoServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = _env(aws, home)
    # no source tree anywhere near: not the cwd, not on sys.path
    probe = subprocess.run([str(installed / "python"), "-c", "import sys, controller; "
                            "print(controller.__file__); print(sys.path)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=True)
    assert str(REPO) not in probe.stdout

    launched = spawn(installed, env, tmp_path, "launch", "-t", "t3.micro", "--ttl", "2h", "--region", REGION,
                     "--no-wait", "--json")
    instances = launched["instances"]
    assert isinstance(instances, list) and len(instances) == 1
    instance_id = str(instances[0]["instance_id"])
    shown = spawn(installed, env, tmp_path, "bundle", "--json")
    assert shown["cached"] is True
    cached = shown["bundle"]
    assert isinstance(cached, dict)
    assert Path(str(cached["path"])).is_relative_to(home / "cache" / "spawn" / "bundles")
    assert user_data_sha256(instance_id) == cached["sha256"] == launched["agent_bundle_sha256"]
    contents = cached["contents"]
    assert isinstance(contents, list) and "wheelhouse/spored-0.1.0-py3-none-any.whl" in contents
    assert not [n for n in contents if "spawn_spored" in n or "rich" in n]

    # the same bytes as the bundle built from the source tree: reproducible across install modes
    assert cached["sha256"] == dev_bundle.ensure_bundle().sha256

    written = spawn(installed, env, tmp_path, "bundle", "write", "air-gapped.tar.gz", "--json")
    assert written["sha256"] == cached["sha256"]
    assert (tmp_path / "air-gapped.tar.gz").is_file()
