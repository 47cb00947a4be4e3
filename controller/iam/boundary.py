"""spawn's permissions boundary: the most any instance role spawn creates may ever do (pure).

The pattern is AWS's own for delegated role creation (IAM User Guide, "Permissions boundaries for
IAM entities", section "Delegating responsibility to others using permissions boundaries",
https://docs.aws.amazon.com/IAM/latest/UserGuide/access_policies_boundaries.html): the person
running spawn may create and change roles only when the role carries this boundary
(``iam:PermissionsBoundary``, see ``controller.iam.cli_policy``), and a role's effective
permissions are the intersection of its own policies and its boundary. So even a role whose
inline policy says ``"Action": "*"`` can do no more than what is written here.

What it allows, generated (never hand-copied) from the two sources of what a spawn role is for:

* the agent's own statements (``controller.iam.agent_policy``), conditions included, so a role
  can end or tag only itself, exactly as the agent's policy says;
* every action of the 13 ``--iam-policy`` templates (``controller.iam.templates``) on ``"*"``.
  A service that has a ``FullAccess`` template (``s3:*``, ``dynamodb:*``, ``sqs:*``) is written
  as that one wildcard, which already covers its ReadOnly/WriteOnly actions. The template scopes
  (``@SCOPE``) stay in the role's own policy; the boundary only caps the actions.

Nothing else: no IAM, no other EC2 action, no KMS. A ``--iam-policy-file`` or
``--iam-managed-policies`` action outside this list is silently without effect on a role that
carries the boundary (that is what a boundary is); ``spawn launch`` warns about it.

Size: a managed policy holds at most 6,144 characters, whitespace not counted (IAM User Guide,
"IAM and AWS STS quotas", https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html).
``boundary_document`` refuses to produce a larger document; a test keeps it well under.
"""

from __future__ import annotations

from typing import Any

from . import document as doclib
from .agent_policy import agent_policy_document
from .templates import POLICY_VERSION, TEMPLATES

BOUNDARY_PATH = "/spawn/"
BOUNDARY_NAME = "spawn-boundary"
BOUNDARY_DESCRIPTION = ("spawn: the most an instance role created by spawn may do (the agent's "
                        "own actions and the --iam-policy templates). Managed by `spawn iam setup`.")
MAX_MANAGED_POLICY_CHARS = 6_144  # IAM quotas: managed policy size, whitespace excluded
TEMPLATES_SID = "SpawnTemplateActions"


def boundary_arn(account: str, *, partition: str = "aws") -> str:
    """The boundary's ARN in one account, e.g. ``arn:aws:iam::123456789012:policy/spawn/spawn-boundary``."""
    return f"arn:{partition}:iam::{account}:policy{BOUNDARY_PATH}{BOUNDARY_NAME}"


def template_actions() -> list[str]:
    """The union of the templates' actions, a service's actions folded into its ``svc:*``."""
    wildcards = {a.split(":", 1)[0] for t in TEMPLATES.values() for a in t.actions
                 if a.endswith(":*")}
    out = {a for t in TEMPLATES.values() for a in t.actions
           if a.endswith(":*") or a.split(":", 1)[0] not in wildcards}
    return sorted(out)


def boundary_document(*, partition: str = "aws") -> dict[str, Any]:
    """The boundary policy ``spawn iam setup`` creates or updates."""
    agent = agent_policy_document(partition=partition)
    statements = [dict(stmt) for stmt in doclib.statements(agent)]
    statements.append({"Sid": TEMPLATES_SID, "Effect": "Allow", "Action": template_actions(),
                       "Resource": "*"})
    document = {"Version": POLICY_VERSION, "Statement": statements}
    size = doclib.compact_size(document)
    if size > MAX_MANAGED_POLICY_CHARS:  # pragma: no cover - guarded by a unit test
        raise AssertionError(f"spawn's boundary is {size} characters, over IAM's managed policy "
                             f"limit of {MAX_MANAGED_POLICY_CHARS}")
    return document


def outside_boundary(document: dict[str, Any], *, partition: str = "aws") -> list[str]:
    """Actions an Allow of ``document`` names that the boundary never allows (action level)."""
    bound = boundary_document(partition=partition)
    out: list[str] = []
    for stmt in doclib.statements(document):
        if stmt.get("Effect") != "Allow" or "Action" not in stmt:
            continue
        actions = stmt["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            if not doclib.allows([bound], action) and action not in out:
                out.append(action)
    return out
