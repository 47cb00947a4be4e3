"""One error hierarchy with stable codes, shared by both programs.

Every error the product raises on purpose is a SpawnError; ``exit_code_for`` maps any
exception to the documented exit status in one place.
"""

from __future__ import annotations

from spored.exit_codes import ExitStatus

__all__ = ["AwsError", "ConfigError", "CredentialsError", "ExitStatus", "NotFound", "PermissionDenied",
           "SpawnError", "UsageError", "ValidationError", "exit_code_for", "from_aws"]


class SpawnError(Exception):
    """Root of the hierarchy. ``code`` is a stable identifier, ``exit_status`` the exit code."""

    code = "error"
    exit_status = ExitStatus.UNEXPECTED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict[str, str]:
        out = {"error": self.code, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        return out


class ValidationError(SpawnError):
    """Bad input: names the field and what is accepted."""

    code = "validation"
    exit_status = ExitStatus.USAGE

    def __init__(self, field: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{field}: {message}", hint=hint)
        self.field = field


class UsageError(SpawnError):
    code = "usage"
    exit_status = ExitStatus.USAGE


class ConfigError(SpawnError):
    code = "config"
    exit_status = ExitStatus.USAGE


class CredentialsError(SpawnError):
    code = "credentials"
    exit_status = ExitStatus.CREDENTIALS


class PermissionDenied(SpawnError):
    code = "permission-denied"
    exit_status = ExitStatus.CREDENTIALS


class AwsError(SpawnError):
    code = "aws"
    exit_status = ExitStatus.AWS

    def __init__(self, message: str, *, aws_code: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.aws_code = aws_code


class NotFound(AwsError):
    code = "not-found"


def exit_code_for(exc: BaseException) -> ExitStatus:
    if isinstance(exc, SpawnError):
        return exc.exit_status
    if isinstance(exc, KeyboardInterrupt):
        return ExitStatus.INTERRUPTED
    return ExitStatus.UNEXPECTED


_CREDENTIAL_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthFailure",
    "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException", "SignatureDoesNotMatch",
    "UnrecognizedClientException",
})
_MISSING_CREDENTIALS = frozenset({"NoCredentialsError", "PartialCredentialsError", "NoRegionError",
                                  "CredentialRetrievalError", "ProfileNotFound"})
# Server-side codes worth a later retry (EC2 API reference, "Error codes": RequestLimitExceeded,
# InternalError, Unavailable; botocore's retry handler treats Throttling and ServiceUnavailable alike).
RETRYABLE_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException",
                             "ServiceUnavailable", "InternalError", "InternalFailure", "Unavailable"})


def _error_body(exc: BaseException) -> dict[str, object] | None:
    # ClientError carries the parsed response; the network errors (ReadTimeoutError,
    # ConnectionClosedError, EndpointConnectionError ...) carry ``response=None``, and
    # credential errors carry no ``response`` at all.
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    error = response.get("Error")
    return error if isinstance(error, dict) else {}


def _lineage(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def is_aws_exception(exc: BaseException) -> bool:
    """An exception from botocore (or its urllib3 transport), whatever its type."""
    return _error_body(exc) is not None or type(exc).__module__.split(".")[0] in ("botocore", "urllib3")


def aws_error_code(exc: BaseException) -> str:
    """The one place that reads a botocore exception's error code (duck-typed: no botocore import).

    A ClientError gives AWS's code (``"Unknown"`` when the response had none); any other botocore
    or urllib3 exception, which never got an error response, gives its class name
    (``"ReadTimeoutError"``, ``"NoCredentialsError"``); anything else gives ``""``.
    """
    error = _error_body(exc)
    if error is not None:
        return str(error.get("Code") or "Unknown")
    return type(exc).__name__ if is_aws_exception(exc) else ""


def aws_error_message(exc: BaseException) -> str:
    error = _error_body(exc)
    return str((error or {}).get("Message") or "") or str(exc)


def aws_error_kind(exc: BaseException) -> str:
    """``denied`` (permissions or credentials), ``unreachable`` (no answer, or an answer that says
    "later": throttling, 5xx codes), ``not-found`` or ``error``."""
    code = aws_error_code(exc)
    if code in _CREDENTIAL_CODES or code in _MISSING_CREDENTIALS:
        return "denied"
    # botocore's transport failures descend from HTTPClientError (ReadTimeoutError,
    # ConnectionClosedError) or from its ConnectionError (EndpointConnectionError,
    # ConnectTimeoutError, ProxyConnectionError, SSLError).
    if code in RETRYABLE_CODES or {"HTTPClientError", "ConnectionError"} & _lineage(exc) or \
            type(exc).__module__.split(".")[0] == "urllib3":
        return "unreachable"
    if code.endswith("NotFound") or code in {"NoSuchEntity", "ParameterNotFound"}:
        return "not-found"
    return "error"


def from_aws(exc: BaseException, *, action: str) -> SpawnError:
    """Translate a botocore exception into the hierarchy (duck-typed: no botocore import here).

    ``action`` says what we were doing ("creating role spawn-abc"), so the message is useful.
    """
    code = aws_error_code(exc)
    if _error_body(exc) is not None:
        msg = aws_error_message(exc)
        if code in _CREDENTIAL_CODES:
            return PermissionDenied(f"{action}: {code}: {msg}")
        if aws_error_kind(exc) == "not-found":
            return NotFound(f"{action}: {code}: {msg}")
        return AwsError(f"{action}: {code}: {msg}", aws_code=code)
    if code in _MISSING_CREDENTIALS:
        return CredentialsError(f"{action}: {exc}")
    if aws_error_kind(exc) == "unreachable":
        return AwsError(f"{action}: cannot reach AWS: {type(exc).__name__}: {exc}", aws_code="Unreachable")
    return AwsError(f"{action}: {exc}")
