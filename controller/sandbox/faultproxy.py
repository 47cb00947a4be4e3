"""A fault-injecting HTTP proxy in front of an AWS endpoint (a moto server), for tests.

Clients point ``AWS_ENDPOINT_URL`` (or ``endpoint_url``) at ``FaultProxy.url``; every request is
forwarded to ``upstream`` unchanged (method, path, headers including ``Host`` and the SigV4
signature, body), unless a rule matches its EC2 Query API action, read from ``Action=`` in the
form-encoded body (or the query string). A rule does one of:

- ``error``: answer ``status`` (default 503) with an EC2 XML error body carrying ``code`` and
  ``message``, in the shape the EC2 API reference documents ("Error codes", example error
  response: ``<Response><Errors><Error><Code>..</Code><Message>..</Message></Error></Errors>
  <RequestID>..</RequestID></Response>``), which botocore parses into a ClientError;
- ``delay``: wait ``seconds``, then forward;
- ``blackhole``: read the request and never answer (the connection stays open until the client
  gives up or the proxy stops), which is what a read timeout looks like from the client.

A rule applies to the next ``count`` matching requests, or to all of them when ``count`` is None.
``log`` records (action, outcome) for every request. The proxy never sees credentials in clear
(the signature is forwarded as is) and never logs headers.
"""

from __future__ import annotations

import http.client
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

from controller.sandbox.loopback import LoopbackHTTPServer, LoopbackService
from spored.errors import ValidationError

KINDS = ("error", "delay", "blackhole")


@dataclass
class Rule:
    action: str               # EC2 action ("TerminateInstances"), or "*" for every request
    kind: str                 # error | delay | blackhole
    status: int = 503
    code: str = "RequestLimitExceeded"
    message: str = "Request limit exceeded."
    seconds: float = 0.0
    count: int | None = None  # None: every matching request

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValidationError("kind", f"{self.kind!r}; accepted: {', '.join(KINDS)}")
        if not 400 <= self.status <= 599:
            raise ValidationError("status", f"{self.status}; accepted: an HTTP error status 400-599")
        if self.seconds < 0 or (self.count is not None and self.count < 1):
            raise ValidationError("seconds/count", "must be >= 0 and >= 1 (or None for every request)")


def error_body(code: str, message: str, request_id: str) -> bytes:
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            f"<Response><Errors><Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
            f"</Error></Errors><RequestID>{request_id}</RequestID></Response>").encode()


def action_of(path: str, body: bytes) -> str:
    """The Query API action of a request: ``Action=`` in the form body, else in the query string."""
    for source in (body.decode("utf-8", errors="replace"), urlsplit(path).query):
        values = parse_qs(source).get("Action")
        if values:
            return values[0]
    return ""


class FaultProxy(LoopbackService):
    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0,
                 upstream_timeout: float = 60.0) -> None:
        super().__init__(host, port, handler=_Handler, thread_name="fault-proxy")
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValidationError("upstream", f"{upstream!r}; accepted: http://HOST[:PORT]")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.upstream_timeout = upstream_timeout
        self.log: deque[tuple[str, str]] = deque(maxlen=10_000)
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._released = threading.Event()

    # -- rules -------------------------------------------------------------------------------
    def add(self, action: str, kind: str, **options: Any) -> Rule:
        rule = Rule(action, kind, **options)
        with self._lock:
            self._rules.append(rule)
        return rule

    def error(self, action: str, code: str = "RequestLimitExceeded", *, status: int = 503,
              message: str = "Request limit exceeded.", count: int | None = None) -> Rule:
        return self.add(action, "error", code=code, status=status, message=message, count=count)

    def delay(self, action: str, seconds: float, *, count: int | None = None) -> Rule:
        return self.add(action, "delay", seconds=seconds, count=count)

    def blackhole(self, action: str, *, count: int | None = None) -> Rule:
        return self.add(action, "blackhole", count=count)

    def clear(self) -> None:
        """Remove every rule and let black-holed requests go (their connections are closed)."""
        with self._lock:
            self._rules.clear()
        self._released.set()
        self._released = threading.Event()

    def released(self) -> threading.Event:
        """Set when held requests must go: on ``clear`` and ``stop``."""
        return self._released

    def match(self, action: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.action in ("*", action):
                    if rule.count is not None:
                        rule.count -= 1
                        if rule.count == 0:
                            self._rules.remove(rule)
                    return rule
        return None

    def outcomes(self, action: str) -> list[str]:
        return [outcome for name, outcome in list(self.log) if name == action]

    # -- lifecycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        self._released.set()  # requests held by a blackhole or a delay end first
        super().stop()

    # -- one request -------------------------------------------------------------------------
    def forward(self, method: str, path: str, headers: list[tuple[str, str]],
                body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port,
                                          timeout=self.upstream_timeout)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in ("connection", "keep-alive", "proxy-connection", "content-length"):
                    conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            hop = ("transfer-encoding", "connection", "content-length")
            return resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in hop], data
        finally:
            conn.close()


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackHTTPServer[FaultProxy]
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: ``FaultProxy.log`` records the action and outcome of every request."""

    def _handle(self) -> None:
        proxy = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        action = action_of(self.path, body)
        rule = proxy.match(action)
        if rule is not None and rule.kind == "blackhole":
            proxy.log.append((action, "blackhole"))
            proxy.released().wait()
            self.close_connection = True
            return
        if rule is not None and rule.kind == "error":
            proxy.log.append((action, f"error {rule.status} {rule.code}"))
            self._write(rule.status, [("Content-Type", "text/xml;charset=UTF-8"),
                                      ("Date", self.date_time_string())],
                        error_body(rule.code, rule.message, str(uuid.uuid4())))
            return
        if rule is not None and rule.kind == "delay":
            proxy.released().wait(rule.seconds)
        try:
            status, headers, data = proxy.forward(self.command, self.path, list(self.headers.items()), body)
        except OSError as exc:
            proxy.log.append((action, f"upstream failed: {type(exc).__name__}"))
            self._write(502, [("Content-Type", "text/plain")], f"upstream failed: {exc}".encode())
            return
        proxy.log.append((action, "delayed" if rule is not None else "forwarded"))
        self._write(status, headers, data)

    def _write(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response_only(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _handle
