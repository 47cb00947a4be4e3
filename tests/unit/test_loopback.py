"""The loopback server the IMDS emulator and the fault proxy are built on: a real socket on 127.0.0.1."""

from __future__ import annotations

import http.client
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from controller.sandbox.loopback import LoopbackHTTPServer, LoopbackService


class _Echo(LoopbackService):
    def __init__(self) -> None:
        super().__init__("127.0.0.1", 0, handler=_Handler, thread_name="echo")
        self.greeting = b"hello"


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackHTTPServer[_Echo]

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        body = self.server.owner.greeting
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _get(url: str) -> bytes:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read()
    finally:
        conn.close()


def test_it_serves_its_owner_on_a_free_port_until_stopped() -> None:
    service = _Echo()
    with pytest.raises(RuntimeError, match="echo is not started"):
        _ = service.url
    with service as started:
        assert started is service
        url = service.url
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        assert service.start() is service and service.url == url  # a second start changes nothing
        service.greeting = b"changed"
        assert _get(url) == b"changed"
    with pytest.raises(RuntimeError):
        _ = service.url
    with pytest.raises(OSError):
        _get(url)
