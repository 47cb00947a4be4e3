"""What a user of `spawn` can do about an error: hints that make sense only on the workstation.

The shared hierarchy (``spored.errors``) says what went wrong; the agent has no use for advice
about `spawn iam cli-policy` or AWS_PROFILE. ``Output.error`` adds these where the error has no
hint of its own.
"""

from __future__ import annotations

from spored.errors import CredentialsError, PermissionDenied, SpawnError

PERMISSION_HINT = "check the credentials and the policy from `spawn iam cli-policy`"
CREDENTIALS_HINT = "set AWS_PROFILE or AWS credentials, and AWS_REGION"


def hint_for(exc: SpawnError) -> str | None:
    """The error's own hint, else the controller's advice for its kind (None: nothing to add)."""
    if exc.hint:
        return exc.hint
    if isinstance(exc, PermissionDenied):
        return PERMISSION_HINT
    if isinstance(exc, CredentialsError):
        return CREDENTIALS_HINT
    return None
