"""A threaded HTTP server on a local address that starts and stops with the object that owns it:
what the sandbox's IMDS emulator and its fault proxy share.

A subclass of ``LoopbackService`` passes its request handler class and a thread name; the handler
reaches the service as ``self.server.owner``. ``start()`` binds
``(host, port)`` (port 0: any free port, read back from ``url``), ``stop()`` shuts the server down
and joins its thread, and ``with service:`` does both.
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Self, TypeVar

Owner = TypeVar("Owner")


class LoopbackHTTPServer(ThreadingHTTPServer, Generic[Owner]):
    daemon_threads = True
    owner: Owner

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (an agent stopped mid-request) is not an error of the server;
        anything else is printed as socketserver does."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class LoopbackService:
    def __init__(self, host: str, port: int, *, handler: type[BaseHTTPRequestHandler],
                 thread_name: str) -> None:
        self._host, self._port = host, port
        self._handler, self._thread_name = handler, thread_name
        self._server: LoopbackHTTPServer[Self] | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"the {self._thread_name} is not started")
        host, port = self._server.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> Self:
        if self._server is not None:
            return self
        server: LoopbackHTTPServer[Self] = LoopbackHTTPServer((self._host, self._port), self._handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name=self._thread_name,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
