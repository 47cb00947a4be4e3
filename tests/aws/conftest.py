"""Fixtures for the tests against the moto server."""

from __future__ import annotations

from collections.abc import Iterator

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
