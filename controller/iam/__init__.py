"""IAM for spawn: templates, the agent's policy, composition (pure), lint, provisioning.

The interface launch codes against (docs/DESIGN.md): ``add_iam_arguments``, ``request_from_args``,
``plan``, ``lint_composed_role``, ``provision``, ``rollback``, ``retry_on_profile_propagation``,
``agent_policy_document``.
Importing this package does not import boto3 or parliament; they load when used.
"""

from __future__ import annotations

from .agent_policy import agent_policy_document
from .compose import IamPlan, IamRequest, plan
from .iam_flags import add_iam_arguments, request_from_args
from .propagation import is_profile_propagation_error, retry_on_profile_propagation
from .provision import Provisioned, lint_composed_role, provision, rollback
from .setup import account_boundary

__all__ = [
    "IamPlan",
    "IamRequest",
    "Provisioned",
    "account_boundary",
    "add_iam_arguments",
    "agent_policy_document",
    "is_profile_propagation_error",
    "lint_composed_role",
    "plan",
    "provision",
    "request_from_args",
    "retry_on_profile_propagation",
    "rollback",
]
