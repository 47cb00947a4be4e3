"""The sandbox's local cloud: a moto server on loopback, in this process.

The controller reaches it exactly as it reaches AWS, through boto3's standard ``AWS_ENDPOINT_URL``;
``LocalCloud.activate`` points this process at it with fake credentials, so nothing the sandbox does
can reach a real AWS account. Child processes get their own environment from ``controller_env``
(for `spawn` commands) or ``agent_env`` (for the agent: no static credentials - it gets them from
the IMDS emulator, as on EC2).

moto is an optional extra (``sandbox``): ``require_moto`` turns its absence into a usage error
that says how to install it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from spored.errors import UsageError

SANDBOX_REGION = "us-east-1"
# Fake, recognisable credentials: moto accepts any key; real AWS would refuse these.
SANDBOX_ACCESS_KEY_ID = "AKIASANDBOXSANDBOX00"
SANDBOX_SECRET_ACCESS_KEY = "sandbox-secret-not-a-real-key"  # noqa: S105 - a fake, by design

MISSING_EXTRA_HINT = "pip install 'spawn-spored[sandbox]'  (from a checkout: ./dev sandbox)"

# Every variable that could point boto3 at a real account or another endpoint.
_AWS_POINTERS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME",
                 "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                 "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "AWS_EC2_METADATA_DISABLED",
                 "AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT", "AWS_CA_BUNDLE")


def require_moto() -> Any:
    """Import moto's threaded server, or fail with exit 2 and the install command."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise UsageError(
            f"spawn sandbox needs the optional extra 'sandbox' (the moto server), "
            f"which is not installed: {exc}",
            hint=MISSING_EXTRA_HINT,
        ) from None
    return ThreadedMotoServer


def scrubbed(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without anything that points boto3 at real credentials or other endpoints."""
    return {k: v for k, v in environ.items()
            if k not in _AWS_POINTERS and not k.startswith("AWS_ENDPOINT_URL")}


def agent_environment(endpoint: str, imds_url: str, region: str,
                      base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for an agent against a local cloud: ``endpoint`` for AWS, the IMDS emulator at
    ``imds_url`` and no static credentials (boto3 gets the role's from the emulator, as on EC2)."""
    env = scrubbed(os.environ if base is None else base)
    env.update({
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds_url,
        "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv4",
        # boto3's defaults (1 s, one attempt) are tight for a machine running the whole cloud.
        "AWS_METADATA_SERVICE_TIMEOUT": "5",
        "AWS_METADATA_SERVICE_NUM_ATTEMPTS": "3",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    })
    return env


class LocalCloud:
    """A moto server on 127.0.0.1 (a free port), IAM's AWS-managed policies loaded."""

    def __init__(self, *, region: str = SANDBOX_REGION) -> None:
        self.region = region
        self._server: Any = None
        self.url = ""

    def start(self) -> None:
        server_class = require_moto()
        # The server's per-request access log would drown the sandbox's own output.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        # Read by moto when the IAM backend is created, i.e. at the first IAM request.
        os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
        server = server_class(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        self._server = server
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> LocalCloud:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def controller_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for `spawn` against this cloud: its endpoint, fake keys, no config files."""
        env = scrubbed(os.environ if base is None else base)
        env.update(self.exports())
        env.update({"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                    "AWS_EC2_METADATA_DISABLED": "true"})
        return env

    def exports(self) -> dict[str, str]:
        """What another terminal exports to act on this cloud with `spawn`."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": SANDBOX_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SANDBOX_SECRET_ACCESS_KEY,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def agent_env(self, imds_url: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for the agent: the endpoint and region, credentials only from IMDS."""
        return agent_environment(self.url, imds_url, self.region, base)

    @contextmanager
    def activate(self) -> Iterator[None]:
        """Point this process's boto3 at the local cloud; restore the environment afterwards."""
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.controller_env(saved))
        _reset_sessions()
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)
            _reset_sessions()


def _reset_sessions() -> None:
    from controller import aws

    aws.session.cache_clear()
