"""An IMDSv2 emulator for one instance that exists in an EC2 endpoint (a moto server).

``ImdsEmulator`` is a real threaded HTTP server that answers the way EC2's instance metadata
service does (see docs of IMDSv2 and /work/shared/notes/moto-and-imds.md):

- ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` 1..21600 returns a
  random token and echoes the TTL header; a missing, non-integer or out-of-range TTL is 400, any
  other verb on the token path 405, a PUT carrying ``X-Forwarded-For`` 403. Tokens expire.
- With tokens required, a GET without a valid, unexpired ``X-aws-ec2-metadata-token`` is 401;
  with tokens optional a GET without a token is served but an invalid token is still 401.
  With the endpoint disabled everything is 403. Unknown paths are 404; directories list their
  entries one per line, sub-directories with a trailing ``/``.
- Everything about the instance is read live from the EC2 endpoint on each request: type, AMI,
  placement, lifecycle, addresses, tags (``tags/instance``, only keys in
  ``[0-9a-zA-Z-_+=,.@:]``, 404 when tags in metadata are off), user data, the identity document.
  ``iam/security-credentials/ROLE`` serves real credentials from ``sts:AssumeRole`` on the role
  behind the instance profile (cached until five minutes before they expire).
- ``spot/instance-action`` and ``events/recommendations/rebalance`` are 404 until armed with
  ``arm_spot`` / ``arm_rebalance``.

Every response carries an HTTP ``Date`` header, as the real service's do; ``clock_offset`` moves it.

Test knobs: ``faults`` (a ``Faults``: per-request delay, next N requests 503 with Retry-After,
next N connections dropped without a response, a cap on token lifetimes), ``clock_offset`` and ``log``
(method, path and status of every metadata request; token values are never recorded).

Emulator-only control API (AWS has no such paths), for tests that run the emulator in another
process; it bypasses the token rules and is not logged:
``POST|DELETE /_emulator/spot`` (``{"action": "terminate", "time": "...Z"}``),
``POST|DELETE /_emulator/rebalance`` (``{"time": "...Z"}``), ``GET|POST /_emulator/faults``,
``GET|DELETE /_emulator/requests``, ``POST /_emulator/tokens/expire``.

Run it as a process: ``python -m controller.sandbox.imds_emulator --help``.

Not emulated: the PUT response hop limit (every client is "on the instance"), IPv6, the
identity document's signatures, network/ and block-device-mapping/ trees, IMDSv1-only quirks.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import secrets
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from functools import cached_property
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from controller.sandbox.loopback import LoopbackHTTPServer, LoopbackService
from controller.sandbox.metadata import (
    MergedDir,
    MotoInstance,
    Node,
    NodeOrLazy,
    Notices,
    RoleInfo,
    identity_document,
    instance_tree,
    notice_tree,
    spot_time_default,
)
from spored.contract import Action, format_timestamp, parse_action, parse_timestamp
from spored.errors import ValidationError

TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a URL path, not a secret
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 - a header name
MAX_TOKEN_TTL = 21600
CONTROL_PREFIX = "/_emulator/"
_INTEGER = re.compile(r"[0-9]{1,9}")
log = logging.getLogger(__name__)


@dataclass
class Faults:
    """Failures to inject; change them at any time (``set`` is atomic, counters are consumed)."""

    delay: float = 0.0             # seconds to wait before answering each request
    fail_503: int = 0              # the next N requests get 503 with Retry-After
    retry_after: int = 1           # the Retry-After value sent with those 503s
    drop: int = 0                  # the next N requests get their connection closed, no response
    token_ttl_cap: float | None = None  # tokens live at most this many seconds, whatever the TTL
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def set(self, **values: Any) -> None:
        allowed = {f.name: f for f in fields(self) if not f.name.startswith("_")}
        for name, value in values.items():
            if name not in allowed:
                raise ValidationError(f"faults.{name}", f"unknown fault; accepted: {', '.join(allowed)}")
            ok = (value is None and name == "token_ttl_cap") or (
                isinstance(value, int | float) and not isinstance(value, bool) and value >= 0)
            if not ok or (name in ("fail_503", "retry_after", "drop") and not isinstance(value, int)):
                raise ValidationError(f"faults.{name}", f"{value!r} must be a non-negative number")
        with self._lock:
            for name, value in values.items():
                setattr(self, name, value)

    def take(self, name: str) -> bool:
        """Consume one from counter ``name``; True when it was armed."""
        with self._lock:
            left = getattr(self, name)
            if left > 0:
                setattr(self, name, left - 1)
                return True
            return False

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    status: int  # 0: the connection was dropped without a response


class RequestLog:
    """The last ``limit`` metadata requests answered (control API requests are not recorded)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=limit)

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def count(self, *, method: str | None = None, path: str | None = None,
              status: int | None = None) -> int:
        return sum(1 for r in self.records()
                   if (method is None or r.method == method) and (path is None or r.path == path)
                   and (status is None or r.status == status))

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def __iter__(self) -> Iterator[RequestRecord]:
        return iter(self.records())


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _text(status: int, body: str | bytes = b"", **headers: str) -> Response:
    return Response(status, body.encode() if isinstance(body, str) else body, dict(headers))


class _View:
    """One request's view of the instance: described at most once, and only if needed."""

    def __init__(self, source: MotoInstance) -> None:
        self._source = source

    @cached_property
    def instance(self) -> dict[str, Any]:
        return self._source.describe()

    @cached_property
    def role(self) -> RoleInfo | None:
        return self._source.role(self.instance)

    def option(self, key: str, enabled: str) -> bool:
        return str((self.instance.get("MetadataOptions") or {}).get(key, "")) == enabled


class ImdsEmulator(LoopbackService):
    """IMDSv2 for instance ``instance_id`` of the EC2 endpoint ``aws_endpoint`` (a moto server).

    ``port=0`` picks a free port; ``url`` is the base URL once started. ``tokens_required``,
    ``endpoint_enabled`` and ``tags_in_metadata`` set to None follow the instance's own
    MetadataOptions (HttpTokens, HttpEndpoint, InstanceMetadataTags), read live.
    ``role_name`` overrides the role found through the instance profile.
    """

    def __init__(self, instance_id: str, region: str, aws_endpoint: str | None, *,
                 host: str = "127.0.0.1", port: int = 0,
                 tokens_required: bool | None = True, endpoint_enabled: bool | None = True,
                 tags_in_metadata: bool | None = None, role_name: str | None = None,
                 session: Any = None, control_api: bool = True) -> None:
        super().__init__(host, port, handler=_Handler, thread_name="imds-emulator")
        self.instance_id = instance_id
        self.region = region
        self.tokens_required = tokens_required
        self.endpoint_enabled = endpoint_enabled
        self.tags_in_metadata = tags_in_metadata
        self.control_api = control_api
        self.faults = Faults()
        self.log = RequestLog()
        # Seconds added to the HTTP Date header of every response (a metadata service whose clock
        # disagrees with ours; the agent uses Date to confirm or refute a wall-clock step).
        self.clock_offset = 0.0
        # The clock tokens expire on (seconds, monotonic); a test replaces it to expire tokens
        # without waiting for their TTL.
        self.monotonic: Callable[[], float] = time.monotonic
        self._source = MotoInstance(instance_id, region, aws_endpoint, role_name=role_name,
                                    session=session)
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}
        self._notices = Notices()
        self._failures_logged: dict[str, float] = {}

    # -- notices and tokens ------------------------------------------------------------------
    def arm_spot(self, action: str = "terminate", at: datetime | None = None) -> None:
        """From now on ``spot/instance-action`` says ``action`` at ``at`` (default: in 2 min)."""
        act = parse_action(action, field="spot action")
        when = _aware(at) if at is not None else spot_time_default()
        with self._lock:
            self._notices = replace(self._notices, spot_action=act.value, spot_time=when)

    def disarm_spot(self) -> None:
        with self._lock:
            self._notices = replace(self._notices, spot_action=None, spot_time=None)

    def arm_rebalance(self, at: datetime | None = None) -> None:
        when = _aware(at) if at is not None else datetime.now(UTC).replace(microsecond=0)
        with self._lock:
            self._notices = replace(self._notices, rebalance_time=when)

    def disarm_rebalance(self) -> None:
        with self._lock:
            self._notices = replace(self._notices, rebalance_time=None)

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (as after its TTL)."""
        with self._lock:
            self._tokens.clear()

    def _issue_token(self, ttl: int) -> str:
        cap = self.faults.snapshot()["token_ttl_cap"]
        lifetime = float(ttl) if cap is None else min(float(ttl), float(cap))
        token = secrets.token_urlsafe(42)
        now = self.monotonic()
        with self._lock:
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + lifetime
        return token

    def _token_valid(self, token: str) -> bool:
        with self._lock:
            expiry = self._tokens.get(token)
        return expiry is not None and expiry > self.monotonic()

    # -- the metadata service ----------------------------------------------------------------
    def respond(self, method: str, path: str, headers: Any) -> Response | None:
        """The answer to one metadata request; None means "drop the connection"."""
        faults = self.faults.snapshot()
        if faults["delay"] > 0:
            time.sleep(faults["delay"])
        if self.faults.take("drop"):
            return None
        if self.faults.take("fail_503"):
            return _text(503, "Service Unavailable", **{"Retry-After": str(faults["retry_after"])})
        view = _View(self._source)
        if not self._enabled(self.endpoint_enabled, view, "HttpEndpoint"):
            return _text(403, "Forbidden")
        if path == TOKEN_PATH:
            return self._token(method, headers)
        if method != "GET":
            return _text(405, "Method Not Allowed", Allow="GET")
        token = headers.get(TOKEN_HEADER)
        if token is not None:
            if not self._token_valid(token):
                return _text(401, "Unauthorized")
        elif self._enabled(self.tokens_required, view, "HttpTokens", "required"):
            return _text(401, "Unauthorized")
        return self._serve(path, view)

    def _enabled(self, setting: bool | None, view: _View, key: str, on: str = "enabled") -> bool:
        return view.option(key, on) if setting is None else setting

    def _token(self, method: str, headers: Any) -> Response:
        if method != "PUT":
            return _text(405, "Method Not Allowed", Allow="PUT")
        if headers.get("X-Forwarded-For") is not None:
            return _text(403, "Forbidden")
        raw = (headers.get(TTL_HEADER) or "").strip()
        if not _INTEGER.fullmatch(raw) or not 1 <= int(raw) <= MAX_TOKEN_TTL:
            return _text(400, "Bad Request")
        return _text(200, self._issue_token(int(raw)), **{TTL_HEADER: raw})

    def _tree(self, view: _View) -> dict[str, NodeOrLazy]:
        with self._lock:
            notices = self._notices

        def rest() -> dict[str, NodeOrLazy]:
            return instance_tree(
                view.instance, region=self.region, role=view.role,
                tags_in_metadata=self._enabled(self.tags_in_metadata, view, "InstanceMetadataTags"),
                credentials=lambda: self._source.credentials(_known(view.role)))

        return {
            "dynamic": {"instance-identity": {
                "document": lambda: identity_document(view.instance, self.region)}},
            "meta-data": MergedDir(notice_tree(notices), rest),
            "user-data": self._source.user_data,
        }

    def _serve(self, path: str, view: _View) -> Response:
        parts = [p for p in path.split("/") if p]
        if not parts:
            return _text(200, "latest")
        if parts[0] != "latest":
            return _text(404, "Not Found")
        node: Node = self._tree(view)
        for part in parts[1:]:
            child = node.get(part) if isinstance(node, Mapping) else None
            value = _force(child)
            if value is None:
                return _text(404, "Not Found")
            node = value
        if isinstance(node, Mapping):
            present = sorted(((n, v) for n, v in ((n, _force(c)) for n, c in node.items()) if v is not None),
                             key=lambda item: item[0])
            # AWS lists /latest/ itself without trailing slashes; deeper directories with them.
            slash = "/" if len(parts) > 1 else ""
            return _text(200, "\n".join(n + slash if isinstance(v, Mapping) else n for n, v in present))
        return _text(200, node)

    def report_failure(self, method: str, path: str, exc: Exception) -> None:
        """Log a failed request on stderr, at most once a minute per kind of failure (a reader
        that never drains a stderr pipe must not be able to block the server)."""
        kind = type(exc).__name__
        now = time.monotonic()
        with self._lock:
            if now - self._failures_logged.get(kind, -60.0) < 60.0:
                return
            self._failures_logged[kind] = now
        log.warning("metadata request %s %s failed: %s: %s", method, path, kind, exc)

    # -- control API (emulator only) ---------------------------------------------------------
    def control(self, method: str, path: str, body: bytes) -> Response:
        try:
            data = json.loads(body or b"{}")
            if not isinstance(data, dict):
                raise ValidationError("body", "must be a JSON object")
            result = self._control(method, path[len(CONTROL_PREFIX):].strip("/"), data)
        except (ValueError, ValidationError) as exc:
            message = exc.message if isinstance(exc, ValidationError) else str(exc)
            return _json(400, {"error": message})
        if result is None:
            return _json(404, {"error": f"no control path {method} {path}"})
        return _json(200, result)

    def _control(self, method: str, name: str, data: dict[str, Any]) -> Any:
        when = parse_timestamp(data["time"], field="time") if data.get("time") else None
        if (method, name) == ("POST", "spot"):
            self.arm_spot(str(data.get("action", Action.TERMINATE.value)), when)
        elif (method, name) == ("DELETE", "spot"):
            self.disarm_spot()
        elif (method, name) == ("POST", "rebalance"):
            self.arm_rebalance(when)
        elif (method, name) == ("DELETE", "rebalance"):
            self.disarm_rebalance()
        elif (method, name) == ("POST", "faults"):
            self.faults.set(**data)
            return self.faults.snapshot()
        elif (method, name) == ("GET", "faults"):
            return self.faults.snapshot()
        elif (method, name) == ("GET", "requests"):
            return [asdict(r) for r in self.log]
        elif (method, name) == ("DELETE", "requests"):
            self.log.clear()
        elif (method, name) == ("POST", "tokens/expire"):
            self.expire_tokens()
        else:
            return None
        with self._lock:
            notices = self._notices
        return {
            "spot": None if notices.spot_time is None else {
                "action": notices.spot_action, "time": format_timestamp(notices.spot_time)},
            "rebalance": None if notices.rebalance_time is None else {
                "noticeTime": format_timestamp(notices.rebalance_time)},
        }


def _force(node: NodeOrLazy) -> Node | None:
    return node() if callable(node) else node


def _known(role: RoleInfo | None) -> RoleInfo:
    if role is None:
        raise LookupError("the instance has no instance profile")
    return role


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("naive datetimes are not timestamps; pass an aware UTC datetime")
    return moment.astimezone(UTC)


def _json(status: int, payload: Any) -> Response:
    return Response(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackHTTPServer[ImdsEmulator]
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall
    server_version = "EC2ws"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log records method, path and status (never headers or tokens)."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header, like the real service's, moved by the emulator's ``clock_offset``."""
        moment = time.time() + self.server.owner.clock_offset if timestamp is None else timestamp
        return super().date_time_string(moment)

    def _handle(self) -> None:
        emulator = self.server.owner
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if emulator.control_api and path.startswith(CONTROL_PREFIX):
            self._write(emulator.control(self.command, path, body))
            return
        try:
            response = emulator.respond(self.command, path, self.headers)
        except Exception as exc:  # the instance or EC2 endpoint is gone: a server-side failure
            emulator.report_failure(self.command, path, exc)
            response = _text(500, f"Internal Server Error: {type(exc).__name__}")
        emulator.log.append(RequestRecord(self.command, path, 0 if response is None else response.status))
        if response is None:
            self.close_connection = True
            return
        self._write(response)

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        headers = {"Content-Type": "text/plain", **response.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _handle


# ---------------------------------------------------------------------------------------------
# As a process
# ---------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m controller.sandbox.imds_emulator",
        description="Serve IMDSv2 for one instance of an EC2 endpoint (a moto server). Prints "
                    '{"event": "ready", "url": ...} on stdout when serving; stops on SIGTERM/SIGINT.')
    parser.add_argument("--instance-id", required=True, help="the instance, e.g. i-0abc...")
    parser.add_argument("--region", required=True, help="its region, e.g. us-east-1")
    parser.add_argument("--aws-endpoint", default=None,
                        help="EC2/IAM/STS endpoint URL (default: boto3's, e.g. AWS_ENDPOINT_URL)")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: a free port)")
    parser.add_argument("--role", default=None, help="role name (default: from the instance profile)")
    tags = parser.add_mutually_exclusive_group()
    tags.add_argument("--tags-in-metadata", dest="tags", action="store_true", default=None,
                      help="expose tags (default: the instance's InstanceMetadataTags)")
    tags.add_argument("--no-tags-in-metadata", dest="tags", action="store_false")
    parser.add_argument("--tokens-optional", action="store_true",
                        help="allow IMDSv1 requests without a token")
    parser.add_argument("--endpoint-disabled", action="store_true", help="answer 403 to everything")
    parser.add_argument("--no-control-api", action="store_true",
                        help="do not serve the emulator-only /_emulator/ control paths")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="imds-emulator: %(message)s")
    emulator = ImdsEmulator(
        args.instance_id, args.region, args.aws_endpoint, host=args.bind, port=args.port,
        tokens_required=not args.tokens_optional, endpoint_enabled=not args.endpoint_disabled,
        tags_in_metadata=args.tags, role_name=args.role, control_api=not args.no_control_api)
    done = threading.Event()
    stop: Callable[..., None] = lambda *_: done.set()  # noqa: E731
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        emulator.start()
    except OSError as exc:
        print(json.dumps({"event": "error", "message": f"cannot listen on {args.bind}:{args.port}: "
                                                        f"{exc.strerror}"}), flush=True)
        return 1
    print(json.dumps({"event": "ready", "url": emulator.url}), flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
