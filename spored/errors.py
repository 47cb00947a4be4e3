"""One error hierarchy with stable codes, shared by both programs.

Every error the product raises on purpose is a SpawnError; ``exit_code_for`` maps any
exception to the documented exit status in one place.
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    OK = 0
    UNEXPECTED = 1
    USAGE = 2
    CREDENTIALS = 3
    AWS = 4
    PREFLIGHT = 5
    SELFTEST = 6
    AGENT_UNCONFIRMED = 7
    INTERRUPTED = 130


EXIT_DESCRIPTIONS: dict[ExitStatus, str] = {
    ExitStatus.OK: "success",
    ExitStatus.UNEXPECTED: "unexpected error (a bug: please report it)",
    ExitStatus.USAGE: "usage or validation error; nothing was changed",
    ExitStatus.CREDENTIALS: "missing credentials or permission denied",
    ExitStatus.AWS: "AWS API error",
    ExitStatus.PREFLIGHT: "`spawn doctor`: a check that would block a launch failed (each FAIL line "
                          "says how to fix it)",
    ExitStatus.SELFTEST: "`spawn selftest`: a stage failed (its fix is printed); everything the run "
                         "created was removed",
    ExitStatus.AGENT_UNCONFIRMED: ("`spawn launch`: the instance runs (kept), but its agent was not "
                                   "confirmed within the wait or reports denied permissions; the failsafe "
                                   "powers it off at the time printed unless the agent reports"),
    ExitStatus.INTERRUPTED: "interrupted (Ctrl-C)",
}


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


def from_aws(exc: BaseException, *, action: str) -> SpawnError:
    """Translate a botocore exception into the hierarchy (duck-typed: no botocore import here).

    ``action`` says what we were doing ("creating role spawn-abc"), so the message is useful.
    """
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        err = response.get("Error", {}) or {}
        code = str(err.get("Code", "Unknown"))
        msg = str(err.get("Message", "")) or str(exc)
        if code in _CREDENTIAL_CODES:
            return PermissionDenied(f"{action}: {code}: {msg}",
                                    hint="check the credentials and the policy from `spawn iam cli-policy`")
        if code.endswith("NotFound") or code in {"NoSuchEntity", "ParameterNotFound"}:
            return NotFound(f"{action}: {code}: {msg}")
        return AwsError(f"{action}: {code}: {msg}", aws_code=code)
    name = type(exc).__name__
    if name in {"NoCredentialsError", "PartialCredentialsError", "NoRegionError",
                "CredentialRetrievalError", "ProfileNotFound"}:
        return CredentialsError(f"{action}: {exc}",
                                hint="set AWS_PROFILE or AWS credentials, and AWS_REGION")
    if name in {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                "ConnectionClosedError"}:
        return AwsError(f"{action}: cannot reach AWS: {exc}", aws_code="Unreachable")
    return AwsError(f"{action}: {exc}")
