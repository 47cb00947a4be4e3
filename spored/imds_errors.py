"""Why instance metadata could not be read. Pure, so the observation types and the decision can
name these errors without importing the HTTP client."""

from __future__ import annotations


class ImdsError(Exception):
    """Metadata could not be read (transient or not); callers turn it into Unknown."""


class ImdsUnavailable(ImdsError):
    """Unreachable, timed out, throttled (503) or an unexpected status."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ImdsDisabled(ImdsError):
    """403 on the token request: the metadata service is disabled for this instance."""
