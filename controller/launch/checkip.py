"""The caller's public IPv4 address, for the default SSH ingress (``<address>/32``).

Asked of AWS's own "what is my IP" endpoint, https://checkip.amazonaws.com, which answers a GET
with the address the request came from, as plain text with a trailing newline. Only that
observable behaviour is relied on, and the answer is checked (one IPv4 address, HTTP 200, no
redirect); anything else stops the launch. ``SPAWN_CHECKIP_URL`` points the
lookup elsewhere (a proxy-aware mirror, or a local server in tests). The lookup is short (3 s):
when it fails, the launch stops and asks for ``--ssh-from``; it never falls back to opening SSH
to everyone.
"""

from __future__ import annotations

import ipaddress
import os

from spored.errors import ValidationError

DEFAULT_URL = "https://checkip.amazonaws.com"
ENV = "SPAWN_CHECKIP_URL"
TIMEOUT_SECONDS = 3.0
MAX_BODY = 64


def url() -> str:
    return os.environ.get(ENV) or DEFAULT_URL


def _refuse(where: str, why: str) -> ValidationError:
    return ValidationError("--ssh-from", f"could not look up your public IPv4 address at {where} ({why}); "
                           "pass --ssh-from YOUR_IP/32 (or the CIDR of the network you connect from; "
                           f"--ssh-from 0.0.0.0/0 allows everyone). {ENV} points the lookup elsewhere")


def caller_cidr(endpoint: str | None = None, *, timeout: float = TIMEOUT_SECONDS) -> str:
    """``a.b.c.d/32`` for the address the lookup service saw; ValidationError when it can't tell."""
    import requests

    where = endpoint or url()
    try:
        resp = requests.get(where, timeout=timeout, allow_redirects=False,
                            headers={"User-Agent": "spawn (ssh ingress lookup)"})
        body = resp.content[:MAX_BODY].decode("ascii", errors="replace").strip()
    except requests.RequestException as exc:
        raise _refuse(where, type(exc).__name__) from None
    if resp.status_code != 200:
        raise _refuse(where, f"HTTP {resp.status_code}")
    try:
        address = ipaddress.IPv4Address(body)
    except ValueError:
        raise _refuse(where, f"the answer {body[:40]!r} is not an IPv4 address") from None
    if address.is_unspecified or address.is_loopback or address.is_multicast:
        raise _refuse(where, f"the answer {address} is not an address anyone connects from")
    return f"{address}/32"
