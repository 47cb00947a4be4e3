"""from_aws turns real botocore exceptions into the documented error codes and exit statuses."""

from __future__ import annotations

import pytest
from botocore import exceptions as bce

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
    exit_code_for,
    from_aws,
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
    assert err.hint and "spawn iam cli-policy" in err.hint
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
    assert err.hint and "AWS_REGION" in err.hint


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
