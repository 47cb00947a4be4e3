"""from_aws turns real botocore exceptions into the documented error codes and exit statuses."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from botocore import exceptions as bce

from controller.error_hints import hint_for
from controller.output import Output
from spored.errors import (
    AwsError,
    ConfigError,
    CredentialsError,
    ExitStatus,
    NotFound,
    PermissionDenied,
    SpawnError,
    UsageError,
    ValidationError,
    aws_error_code,
    aws_error_kind,
    exit_code_for,
    from_aws,
    is_aws_exception,
)


def client_error(code: str, message: str = "details from AWS",
                 operation: str = "TerminateInstances") -> bce.ClientError:
    return bce.ClientError({"Error": {"Code": code, "Message": message}}, operation)


@pytest.mark.parametrize("code", [
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthFailure",
    "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException", "SignatureDoesNotMatch",
    "UnrecognizedClientException",
])
def test_permission_and_credential_codes_exit_3(code: str) -> None:
    err = from_aws(client_error(code, "You are not authorized"), action="terminating i-0abc")
    assert isinstance(err, PermissionDenied)
    assert exit_code_for(err) is ExitStatus.CREDENTIALS and int(err.exit_status) == 3
    assert err.message == f"terminating i-0abc: {code}: You are not authorized"
    assert err.hint is None  # advice about `spawn iam cli-policy` is the controller's (error_hints)
    assert err.to_dict()["error"] == "permission-denied"


@pytest.mark.parametrize("code", [
    "InvalidInstanceID.NotFound", "InvalidGroup.NotFound", "InvalidKeyPair.NotFound",
    "NoSuchEntity", "ParameterNotFound", "InvalidAMIID.NotFound",
])
def test_missing_things_are_not_found_exit_4(code: str) -> None:
    err = from_aws(client_error(code), action="describing i-0abc")
    assert isinstance(err, NotFound) and isinstance(err, AwsError)
    assert err.code == "not-found" and err.exit_status is ExitStatus.AWS and int(err.exit_status) == 4
    assert code in err.message and "describing i-0abc" in err.message


@pytest.mark.parametrize("code", [
    "RequestLimitExceeded", "Throttling", "InsufficientInstanceCapacity", "EntityAlreadyExists",
    "LimitExceeded", "InvalidParameterValue", "IncorrectInstanceState", "InternalError",
])
def test_other_aws_errors_exit_4_and_keep_the_aws_code(code: str) -> None:
    err = from_aws(client_error(code, "try later"), action="launching")
    assert type(err) is AwsError
    assert err.aws_code == code and err.exit_status is ExitStatus.AWS
    assert err.message == f"launching: {code}: try later"


def test_error_without_code_or_message_still_says_what_we_were_doing() -> None:
    raw = bce.ClientError({"Error": {}}, "DescribeTags")
    err = from_aws(raw, action="reading tags")
    assert type(err) is AwsError and err.aws_code == "Unknown"
    assert err.message.startswith("reading tags: Unknown: ")
    assert "DescribeTags" in err.message  # botocore's own text stands in for the missing message


@pytest.mark.parametrize("exc", [
    bce.NoCredentialsError(),
    bce.PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
    bce.NoRegionError(),
    bce.CredentialRetrievalError(provider="sso", error_msg="token expired"),
    bce.ProfileNotFound(profile="nope"),
])
def test_missing_credentials_or_region_exit_3(exc: Exception) -> None:
    err = from_aws(exc, action="listing instances")
    assert type(err) is CredentialsError and err.exit_status is ExitStatus.CREDENTIALS
    assert err.message.startswith("listing instances: ") and str(exc) in err.message
    assert err.hint is None  # advice about AWS_PROFILE is the controller's (error_hints)
    assert "AWS_REGION" in (hint_for(err) or "")


@pytest.mark.parametrize("exc", [
    bce.EndpointConnectionError(endpoint_url="https://ec2.us-east-1.amazonaws.com/"),
    bce.ConnectTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/"),
    bce.ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/"),
    bce.ConnectionClosedError(endpoint_url="https://ec2.us-east-1.amazonaws.com/"),
])
def test_unreachable_aws_exits_4(exc: Exception) -> None:
    err = from_aws(exc, action="stopping i-0abc")
    assert type(err) is AwsError and err.aws_code == "Unreachable"
    assert "cannot reach AWS" in err.message and "ec2.us-east-1.amazonaws.com" in err.message


def test_waiter_errors_are_aws_errors() -> None:
    exc = bce.WaiterError(name="InstanceRunning", reason="Max attempts exceeded", last_response={})
    err = from_aws(exc, action="waiting for i-0abc")
    assert type(err) is AwsError and err.exit_status is ExitStatus.AWS
    assert "Max attempts exceeded" in err.message


@pytest.mark.parametrize(("exc", "status"), [
    (ValidationError("--ttl", "bad"), ExitStatus.USAGE),
    (UsageError("no command"), ExitStatus.USAGE),
    (ConfigError("spored.toml: bad"), ExitStatus.USAGE),
    (CredentialsError("none"), ExitStatus.CREDENTIALS),
    (PermissionDenied("no"), ExitStatus.CREDENTIALS),
    (AwsError("boom"), ExitStatus.AWS),
    (NotFound("gone"), ExitStatus.AWS),
    (SpawnError("plain"), ExitStatus.UNEXPECTED),
    (KeyboardInterrupt(), ExitStatus.INTERRUPTED),
    (RuntimeError("bug"), ExitStatus.UNEXPECTED),
    (client_error("AccessDenied"), ExitStatus.UNEXPECTED),  # untranslated AWS errors are bugs
])
def test_exit_code_for(exc: BaseException, status: ExitStatus) -> None:
    assert exit_code_for(exc) is status


def test_validation_error_names_the_field_and_serialises() -> None:
    err = ValidationError("--idle-timeout", "'x' is not a duration", hint="try 30m")
    assert err.field == "--idle-timeout"
    assert err.to_dict() == {"error": "validation", "message": "--idle-timeout: 'x' is not a duration",
                             "hint": "try 30m"}
    assert "hint" not in AwsError("boom").to_dict()


def _every_botocore_exception() -> list[BaseException]:
    """One instance of every exception class botocore defines, built with its own message fields."""
    import inspect
    import string

    out: list[BaseException] = []
    for _name, cls in sorted(inspect.getmembers(bce, inspect.isclass)):
        if not issubclass(cls, Exception) or cls.__module__ != bce.__name__:
            continue
        if issubclass(cls, bce.ClientError):
            out.append(cls({"Error": {"Code": "SomeCode", "Message": "m"}}, "DescribeTags"))
            continue
        fmt = getattr(cls, "fmt", "")
        fields: dict[str, Any] = {f: "x" for _, f, _, _ in string.Formatter().parse(fmt) if f}
        params = inspect.signature(cls.__init__).parameters
        fields.update({name: {} if "response" in name else "x" for name, p in params.items()
                       if name != "self" and p.default is p.empty
                       and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)})
        out.append(cls(**fields))
    return out


@pytest.mark.parametrize("exc", _every_botocore_exception(), ids=lambda e: type(e).__name__)
def test_every_botocore_exception_has_a_code_a_kind_and_a_translation(exc: BaseException) -> None:
    code = aws_error_code(exc)
    assert code and isinstance(code, str)
    assert aws_error_kind(exc) in {"denied", "unreachable", "not-found", "error"}
    assert isinstance(from_aws(exc, action="doing x"), SpawnError)


@pytest.mark.parametrize("cls", [bce.ReadTimeoutError, bce.ConnectionClosedError, bce.ConnectTimeoutError,
                                 bce.EndpointConnectionError, bce.ProxyConnectionError])
def test_transport_failures_have_no_response_and_are_unreachable(cls: type[bce.BotoCoreError]) -> None:
    exc = cls(endpoint_url="http://127.0.0.1:9/", proxy_url="http://127.0.0.1:9/", error="reset")
    # No response came back: ``None`` (what the old `getattr(exc, "response", {}).get` tripped on)
    # for the HTTPClientError family, no attribute at all for the ConnectionError family.
    assert getattr(exc, "response", None) is None
    assert aws_error_code(exc) == cls.__name__ and aws_error_kind(exc) == "unreachable"


@pytest.mark.parametrize(("code", "kind"), [
    ("UnauthorizedOperation", "denied"), ("RequestLimitExceeded", "unreachable"),
    ("InternalError", "unreachable"), ("InvalidInstanceID.NotFound", "not-found"),
    ("IncorrectInstanceState", "error"),
])
def test_client_error_kinds(code: str, kind: str) -> None:
    assert aws_error_code(client_error(code)) == code and aws_error_kind(client_error(code)) == kind


def test_non_aws_exceptions_have_no_aws_code() -> None:
    assert aws_error_code(ValueError("x")) == "" and not is_aws_exception(ValueError("x"))
@pytest.mark.parametrize(("exc", "advice"), [
    (client_error("AccessDenied"), "spawn iam cli-policy"),
    (bce.NoCredentialsError(), "AWS_PROFILE"),
])
def test_spawn_shows_its_own_advice_with_credential_errors(exc: Exception, advice: str) -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    Output(json=True, stdout=stdout, stderr=stderr).error(from_aws(exc, action="listing instances"))
    assert advice in json.loads(stdout.getvalue())["hint"]
    assert f"hint: {hint_for(from_aws(exc, action='x'))}" in stderr.getvalue()


def test_an_errors_own_hint_is_kept() -> None:
    assert hint_for(PermissionDenied("denied", hint="ask the administrator")) == "ask the administrator"
    assert hint_for(AwsError("boom")) is None
