"""Fixtures for the tests against the moto server."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller import aws as controller_aws


@pytest.fixture
def recorded() -> Iterator[list[tuple[str, str]]]:
    """Every (service, operation) the controller sends while the test runs."""
    calls: list[tuple[str, str]] = []

    def hook(service: str, operation: str) -> None:
        calls.append((service, operation))

    controller_aws.CALL_HOOKS.append(hook)
    try:
        yield calls
    finally:
        controller_aws.CALL_HOOKS.remove(hook)


# A syntactically valid OpenSSH ed25519 public key (no private key exists for it).
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq2lNH3Xk7GZqj0m8r2vJ0eP7Wq7l1v3yJd0QmFvYtB me@laptop"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME: no ~/.ssh keys, spawn's known_hosts and caches under tmp."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.delenv("SPAWN_AGENT_BUNDLE", raising=False)
    return h


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A small local agent bundle: launch hashes it, uploads it and renders its pre-signed URL."""
    path = tmp_path / "spored-bundle-0.0.test.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        data = b"#!/bin/sh\necho installing\n"
        info = tarfile.TarInfo("spored-bundle-0.0.test/install.sh")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def ssh_key(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519.pub"
    path.write_text(ED25519 + "\n")
    return path
