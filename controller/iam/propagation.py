"""Retry RunInstances while a new instance profile propagates through IAM.

After CreateInstanceProfile/AddRoleToInstanceProfile, EC2 may answer RunInstances for several
seconds with ``InvalidParameterValue``: "Value (...) for parameter iamInstanceProfile.arn is
invalid. Invalid IAM Instance Profile ARN" (or ``.name`` / "Invalid IAM Instance Profile name").
Only that error is retried; everything else propagates at once.

Backoff: "full jitter" (sleep a uniform random time in [0, min(max_delay, base_delay * 2**n)]).
With the defaults (8 attempts, base 1 s, cap 15 s) the caps are 1+2+4+8+15+15+15 = 60 s, so the
total sleep is bounded by 60 s (on average about half of that) before the last error is raised.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from spored.errors import aws_error_code, aws_error_message

T = TypeVar("T")

DEFAULT_ATTEMPTS = 8
DEFAULT_BASE_DELAY = 1.0
DEFAULT_MAX_DELAY = 15.0


def is_profile_propagation_error(exc: BaseException) -> bool:
    if aws_error_code(exc) != "InvalidParameterValue":
        return False
    message = aws_error_message(exc).lower()
    return "iaminstanceprofile" in message or "invalid iam instance profile" in message


def max_total_delay(attempts: int = DEFAULT_ATTEMPTS, base_delay: float = DEFAULT_BASE_DELAY,
                    max_delay: float = DEFAULT_MAX_DELAY) -> float:
    """The bound on the total sleep: the sum of the per-retry caps."""
    return float(sum(min(max_delay, base_delay * 2 ** n) for n in range(attempts - 1)))


def retry_on_profile_propagation(fn: Callable[[], T], *, attempts: int = DEFAULT_ATTEMPTS,
                                 base_delay: float = DEFAULT_BASE_DELAY,
                                 max_delay: float = DEFAULT_MAX_DELAY,
                                 sleep: Callable[[float], None] = time.sleep,
                                 rng: Callable[[float, float], float] = random.uniform) -> T:
    """Call ``fn``; on the instance-profile propagation error retry with jittered backoff."""
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    for n in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if not is_profile_propagation_error(exc) or n == attempts - 1:
                raise
            sleep(rng(0.0, min(max_delay, base_delay * 2 ** n)))
    raise AssertionError("unreachable")  # the loop returns or raises
