"""structlog configuration, done once per entry point.

The agent writes JSON lines to stdout (journald keeps them); the CLI writes logs to stderr.
Anything that looks like an IMDS token or a secret is redacted before it is rendered.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_KEYS = frozenset({
    "token", "x-aws-ec2-metadata-token", "secretaccesskey", "secret_access_key",
    "sessiontoken", "session_token", "aws_secret_access_key", "aws_session_token", "password",
})


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in _SECRET_KEYS:
            event[key] = "[redacted]"
    return event


def configure(*, json: bool, stream: TextIO | None = None, level: str = "info") -> None:
    out = stream if stream is not None else sys.stderr
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    if json:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=out.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One write() per line, newline included: the agent and its status-writer child share
        # stdout, and with two writes per line (print) their lines interleaved mid-line.
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get(name: str) -> Any:
    return structlog.get_logger(name)
