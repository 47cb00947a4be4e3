"""The one HTTP chokepoint to the instance metadata service (IMDSv2 only).

Rules (after cloud-init and aws-node-termination-handler):
- a session token is fetched with ``PUT /latest/api/token`` (6 h), cached, and refreshed before it
  expires (when less than ``refresh_margin`` remains);
- a 401 on a GET drops the token and retries once with a fresh one;
- a 403 on the token PUT means metadata is disabled (or the hop limit blocks us): reported as
  ``ImdsDisabled`` and not retried for ``disabled_backoff`` seconds (no PUT storms);
- 404 means "not present" and returns ``None``;
- 503 honours ``Retry-After``: no request goes out before it has passed;
- short timeouts; the token is never logged.

Base URL: the ``endpoint`` argument, else ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` (like boto3), else
``http://169.254.169.254``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from spored import __version__, logs
from spored.imds_errors import ImdsDisabled, ImdsUnavailable

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a URL path, not a secret
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"  # noqa: S105 - header name
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 - header name

log = logs.get("spored.imds_client")


def endpoint_from_env(configured: str = "") -> str:
    base = configured or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", "") or DEFAULT_ENDPOINT
    return base.rstrip("/")


def _retry_after_seconds(value: str | None, now_wall: float) -> float:
    if not value:
        return 1.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now_wall)
    except (TypeError, ValueError):
        return 1.0


class _ImdsAdapter(HTTPAdapter):
    """HTTPAdapter for a fixed, never-proxied endpoint: the connection pool found for a URL is
    kept (no proxy selection and URL parsing on every GET) and the request line is the path."""

    def __init__(self) -> None:
        super().__init__(pool_connections=1, pool_maxsize=2, max_retries=0)
        self._pools: dict[str, Any] = {}

    def get_connection_with_tls_context(self, request: requests.PreparedRequest, verify: Any,
                                        proxies: Any = None, cert: Any = None) -> Any:
        key = str(request.url)
        pool = self._pools.get(key)
        if pool is None:
            if len(self._pools) > 64:
                self._pools.clear()
            pool = self._pools[key] = super().get_connection_with_tls_context(request, verify, proxies, cert)
        return pool

    def request_url(self, request: requests.PreparedRequest, proxies: Any) -> str:
        return str(request.path_url)

    def close(self) -> None:
        self._pools.clear()
        super().close()


class ImdsClient:
    """Thread-safe IMDSv2 client. ``get(path)`` returns the body, or None when absent (404)."""

    def __init__(
        self,
        endpoint: str = "",
        *,
        timeout: float = 2.0,
        token_ttl: int = 21600,
        refresh_margin: float = 60.0,
        disabled_backoff: float = 60.0,
        max_retry_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        session: requests.Session | None = None,
    ) -> None:
        self.base = endpoint_from_env(endpoint)
        self.timeout = timeout
        self.token_ttl = token_ttl
        self.refresh_margin = min(refresh_margin, token_ttl / 2)
        self.disabled_backoff = disabled_backoff
        self.max_retry_after = max_retry_after
        self._clock = clock
        self._session = session or requests.Session()
        # Only what IMDS needs: no Accept/Accept-Encoding/Connection defaults (HTTP/1.1 keeps alive).
        self._session.headers.clear()
        self._session.headers["User-Agent"] = f"spored/{__version__}"
        # Never through a proxy (IMDS refuses proxied token requests) and no ~/.netrc lookups:
        # the spot poll is the agent's only frequent work, so each request must be cheap.
        self._session.trust_env = False
        # GETs go straight to this adapter: no Session.send (hooks, cookie jar, redirect and
        # environment merging) on the frequent path. One pooled keep-alive connection.
        self._adapter = _ImdsAdapter()
        self._session.mount("http://", self._adapter)
        self._session.mount("https://", self._adapter)
        self._prepared: dict[str, requests.PreparedRequest] = {}
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_expires = 0.0
        self._not_before = 0.0
        self._disabled_until = 0.0
        # The Date header of the last response and when it came (monotonic): a second source of
        # the time when the wall clock steps (spored.clock). Kept raw: parsed only when needed.
        self.last_date: str | None = None
        self.last_date_at = 0.0

    # -- token ---------------------------------------------------------------------------------
    def _fresh_token(self) -> str:
        now = self._clock()
        if self._token is not None and now < self._token_expires - self.refresh_margin:
            return self._token
        if now < self._disabled_until:
            raise ImdsDisabled("instance metadata is disabled (403 on the token request); "
                               f"next try in {self._disabled_until - now:.0f}s")
        self._check_backoff(now)
        try:
            resp = self._session.put(self.base + TOKEN_PATH, headers={TOKEN_TTL_HEADER: str(self.token_ttl)},
                                     timeout=self.timeout)
        except requests.RequestException as exc:
            raise ImdsUnavailable(f"token request failed: {type(exc).__name__}") from None
        if resp.status_code == 403:
            self._disabled_until = now + self.disabled_backoff
            log.warning("imds.disabled", status=403, backoff_s=self.disabled_backoff)
            raise ImdsDisabled("instance metadata is disabled (403 on the token request)")
        self._raise_for_status(resp, TOKEN_PATH)
        token = resp.text.strip()
        if not token:
            raise ImdsUnavailable("empty token from the metadata service")
        ttl = self.token_ttl
        with contextlib.suppress(ValueError):
            ttl = int(resp.headers.get(TOKEN_TTL_HEADER, ttl))
        self._token = token
        self._token_expires = now + ttl
        log.debug("imds.token", ttl_s=ttl)
        return token

    # -- requests ------------------------------------------------------------------------------
    def _check_backoff(self, now: float) -> None:
        if now < self._not_before:
            raise ImdsUnavailable(f"metadata service asked us to wait {self._not_before - now:.1f}s",
                                  retry_after=self._not_before - now)

    def _raise_for_status(self, resp: requests.Response, path: str) -> None:
        if resp.status_code == 503:
            wait = min(_retry_after_seconds(resp.headers.get("Retry-After"), time.time()),
                       self.max_retry_after)
            self._not_before = self._clock() + wait
            log.info("imds.throttled", path=path, retry_after_s=wait)
            raise ImdsUnavailable(f"{path}: 503, retry after {wait:.1f}s", retry_after=wait)
        if resp.status_code != 200:
            raise ImdsUnavailable(f"{path}: HTTP {resp.status_code}")

    def _prepare(self, url: str, token: str) -> requests.PreparedRequest:
        """A prepared GET, reused while the token lasts (skips requests' per-call preparation)."""
        prepared = self._prepared.get(url)
        if prepared is None or prepared.headers.get(TOKEN_HEADER) != token:
            if len(self._prepared) > 64:
                self._prepared.clear()
            prepared = self._session.prepare_request(
                requests.Request("GET", url, headers={TOKEN_HEADER: token}))
            self._prepared[url] = prepared
        return prepared

    def get(self, path: str) -> str | None:
        """GET ``/latest/<path>``; None if the metadata service says 404 (absent)."""
        url = f"{self.base}/latest/{path.lstrip('/')}"
        with self._lock:
            for attempt in (1, 2):
                self._check_backoff(self._clock())
                token = self._fresh_token()
                try:
                    resp = self._adapter.send(self._prepare(url, token), timeout=self.timeout)
                    body = resp.content  # read now: the connection goes back to the pool
                except requests.RequestException as exc:
                    raise ImdsUnavailable(f"{path}: {type(exc).__name__}") from None
                self.last_date, self.last_date_at = resp.headers.get("Date"), self._clock()
                if resp.status_code == 401 and attempt == 1:
                    log.info("imds.token_rejected", path=path)
                    self._token = None
                    continue
                if resp.status_code == 404:
                    return None
                self._raise_for_status(resp, path)
                return body.decode("utf-8", errors="replace")  # IMDS serves UTF-8 text/plain
        raise ImdsUnavailable(f"{path}: 401 twice with a fresh token")
