"""retry_on_profile_propagation: only the propagation error, bounded jittered backoff."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from controller.iam import retry_on_profile_propagation
from controller.iam.propagation import max_total_delay

PROPAGATION = ClientError({"Error": {
    "Code": "InvalidParameterValue",
    "Message": "Value (arn:aws:iam::123456789012:instance-profile/spawn/spawn-abc) for parameter "
               "iamInstanceProfile.arn is invalid. Invalid IAM Instance Profile ARN"}},
    "RunInstances")
OTHER_INVALID = ClientError({"Error": {"Code": "InvalidParameterValue",
                                       "Message": "Invalid value 'x' for instanceType"}},
                            "RunInstances")


class Flaky:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "launched"


def test_retries_the_propagation_error_then_succeeds() -> None:
    sleeps: list[float] = []
    fn = Flaky([PROPAGATION, PROPAGATION])
    assert retry_on_profile_propagation(fn, sleep=sleeps.append) == "launched"
    assert fn.calls == 3
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 1.0 and 0 <= sleeps[1] <= 2.0


def test_other_errors_are_not_retried() -> None:
    sleeps: list[float] = []
    fn = Flaky([OTHER_INVALID])
    with pytest.raises(ClientError):
        retry_on_profile_propagation(fn, sleep=sleeps.append)
    assert fn.calls == 1 and sleeps == []


def test_gives_up_after_attempts_with_bounded_total_sleep() -> None:
    sleeps: list[float] = []
    fn = Flaky([PROPAGATION] * 20)
    with pytest.raises(ClientError):
        retry_on_profile_propagation(fn, sleep=sleeps.append, rng=lambda lo, hi: hi)
    assert fn.calls == 8
    assert sum(sleeps) == max_total_delay() == 60.0
    assert max(sleeps) == 15.0


def test_name_variant_of_the_message_is_recognised() -> None:
    err = ClientError({"Error": {"Code": "InvalidParameterValue",
                                 "Message": "Invalid IAM Instance Profile name"}}, "RunInstances")
    fn = Flaky([err])
    assert retry_on_profile_propagation(fn, sleep=lambda s: None) == "launched"
