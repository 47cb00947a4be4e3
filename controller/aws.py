"""The one place the controller builds AWS clients.

boto3 is imported here, lazily, so commands that need no AWS start fast. Clients use botocore's
``standard`` retry mode (throttling and transient errors, with jitter) unless ``AWS_RETRY_MODE``
says otherwise, and honour boto3's own environment (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL).

``CALL_HOOKS`` lets an observer see every operation made (the declared-permissions test uses it):
each hook is called with ``(service, operation)`` before the request is sent.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

from controller import __version__
from spored.errors import CredentialsError

if TYPE_CHECKING:
    import boto3

CALL_HOOKS: list[Callable[[str, str], None]] = []


def _on_call(model: Any, **_kw: Any) -> None:
    service = model.service_model.service_name
    for hook in list(CALL_HOOKS):
        hook(service, model.name)


@cache
def session(profile: str | None = None) -> boto3.session.Session:
    import boto3

    sess = boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
    sess.events.register("before-call.*.*", _on_call)
    return sess


def default_region() -> str:
    region = session().region_name or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise CredentialsError("no AWS region configured",
                               hint="pass --region or set AWS_REGION / AWS_DEFAULT_REGION")
    return region


def client(service: str, region: str | None = None, *, signature_version: str | None = None,
           max_attempts: int = 5) -> Any:
    """``signature_version``: e.g. ``s3v4`` for S3 pre-signed URLs that every region accepts.
    ``max_attempts``: 1 for a call whose failure is an answer (no retries)."""
    from botocore.config import Config

    mode = os.environ.get("AWS_RETRY_MODE", "standard")
    retries: Any = {"mode": mode if mode in ("legacy", "standard", "adaptive") else "standard",
                    "max_attempts": max_attempts}
    config = Config(
        retries=retries,
        user_agent_extra=f"spawn/{__version__}",
        connect_timeout=5,
        read_timeout=30,
        signature_version=signature_version,  # None: the service default
    )
    return session().client(service, region_name=region or default_region(), config=config)  # type: ignore[call-overload]
