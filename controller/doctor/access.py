"""Whether the caller may do what a launch does (pure): what to ask AWS, and what its answers mean.

Two sources of evidence, each used where it is authoritative:

- **iam:SimulatePrincipalPolicy** evaluates the caller's identity policies for a list of actions on
  given resources (IAM API Reference, SimulatePrincipalPolicy; ``EvalDecision`` is one of
  ``allowed | explicitDeny | implicitDeny``, IAM API Reference, EvaluationResult). It is the only way
  to learn about IAM, S3 and SSM actions without making the call. Its ``PolicySourceArn`` must be a
  user, group or role, so an assumed-role session is simulated through its role. An implicit deny
  that lists ``MissingContextValues`` depends on condition keys we could not supply: that is not
  a denial we can prove, and it is reported as not checked.
- **EC2 DryRun**: "Checks whether you have the required permissions for the action, without
  actually making the request ... If you have the required permissions, the error response is
  DryRunOperation. Otherwise, it is UnauthorizedOperation" (EC2 API Reference, the ``DryRun``
  parameter of RunInstances, CreateSecurityGroup, AuthorizeSecurityGroupIngress, ImportKeyPair).
  AWS evaluates the real request, conditions and all, so a DryRun answer overrides the simulator
  for the actions it covers. moto answers a denied call with ``AccessDenied`` instead of
  ``UnauthorizedOperation``; both count as denied.

Simulated resources follow what a launch touches (roles and profiles under ``/spawn/``, the
bundle bucket, the AMI's public parameter), so a policy scoped to those resources is simulated
against the resources it is scoped to rather than against ``*``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DRYRUN_ALLOWED = "DryRunOperation"
DRYRUN_DENIED = frozenset({"UnauthorizedOperation", "AccessDenied"})

# The context a launch's requests carry, for policies that condition on it.
_LAUNCH_CONTEXT: tuple[dict[str, Any], ...] = (
    {"ContextKeyName": "iam:PassedToService", "ContextKeyValues": ["ec2.amazonaws.com"],
     "ContextKeyType": "string"},
    {"ContextKeyName": "aws:RequestTag/spawn:managed", "ContextKeyValues": ["true"],
     "ContextKeyType": "string"},
    # The EC2 resources a launch changes or deletes are its own, tagged spawn:managed=true.
    {"ContextKeyName": "ec2:ResourceTag/spawn:managed", "ContextKeyValues": ["true"],
     "ContextKeyType": "string"},
    {"ContextKeyName": "aws:ResourceTag/spawn:managed", "ContextKeyValues": ["true"],
     "ContextKeyType": "string"},
)


def simulation_context(account: str, boundary_arn: str | None) -> list[dict[str, Any]]:
    """The context entries to simulate with: what every launch request carries, the caller's
    account (``aws:PrincipalAccount``, a global key that policies use as a variable), and
    ``boundary_arn``: the permissions boundary a launch attaches to the roles it creates (spawn's,
    when `spawn iam setup` has made it), which a scoped policy requires as ``iam:PermissionsBoundary``."""
    entries = [*_LAUNCH_CONTEXT, {"ContextKeyName": "aws:PrincipalAccount", "ContextKeyValues": [account],
                                  "ContextKeyType": "string"}]
    if boundary_arn:
        entries.append({"ContextKeyName": "iam:PermissionsBoundary", "ContextKeyValues": [boundary_arn],
                        "ContextKeyType": "string"})
    return entries


# EC2 actions on one existing resource, by the resource type AWS authorizes them on (Service
# Authorization Reference, Amazon EC2). RunInstances, CreateSecurityGroup and ImportKeyPair touch
# several resource types at once: their DryRun is the evidence, not a simulation on one ARN.
_EC2_RESOURCE = {
    "ec2:TerminateInstances": "instance/i-0d0c0000000000000",
    "ec2:StopInstances": "instance/i-0d0c0000000000000",
    "ec2:StartInstances": "instance/i-0d0c0000000000000",
    "ec2:CreateTags": "instance/i-0d0c0000000000000",
    "ec2:DeleteTags": "instance/i-0d0c0000000000000",
    "ec2:AuthorizeSecurityGroupIngress": "security-group/sg-0d0c0000000000000",
    "ec2:DeleteSecurityGroup": "security-group/sg-0d0c0000000000000",
    "ec2:DeleteKeyPair": "key-pair/key-0d0c0000000000000",
}

_BUCKET_ACTIONS = frozenset({"s3:CreateBucket", "s3:ListBucket", "s3:PutBucketOwnershipControls",
                             "s3:PutBucketPublicAccessBlock"})
_ASSUMED_ROLE = re.compile(r"^arn:(?P<p>[\w-]+):sts::(?P<a>\d{12}):assumed-role/(?P<role>[\w+=,.@-]+)/")
_IAM_USER = re.compile(r"^arn:[\w-]+:iam::\d{12}:user/")
_ROOT = re.compile(r"^arn:[\w-]+:iam::\d{12}:root$")


@dataclass(frozen=True)
class Principal:
    """Who to simulate: a user ARN as is, or the role of an assumed-role session (by name)."""

    kind: str  # "user" | "role" | "root" | "other"
    arn: str
    role_name: str | None = None


def principal_of(caller_arn: str) -> Principal:
    if _ROOT.match(caller_arn):
        return Principal("root", caller_arn)
    if _IAM_USER.match(caller_arn):
        return Principal("user", caller_arn)
    match = _ASSUMED_ROLE.match(caller_arn)
    if match:
        # The session ARN does not carry the role's path; the adapter asks iam:GetRole for it.
        guess = f"arn:{match['p']}:iam::{match['a']}:role/{match['role']}"
        return Principal("role", guess, role_name=match["role"])
    return Principal("other", caller_arn)


def partition_of(arn: str) -> str:
    parts = arn.split(":")
    return parts[1] if len(parts) > 2 and parts[1] else "aws"


def resource_for(action: str, *, partition: str, account: str, region: str, bucket: str,
                 ami_parameter: str) -> str:
    """The resource ARN a launch's call of ``action`` acts on ("*" where it names none)."""
    service, _, name = action.partition(":")
    if service == "iam":
        if "InstanceProfile" in name and not name.endswith("ForRole"):
            return f"arn:{partition}:iam::{account}:instance-profile/spawn/spawn-doctor"
        if "Role" in name:
            return f"arn:{partition}:iam::{account}:role/spawn/spawn-doctor"
        if name.startswith(("GetPolicy", "ListPolicyVersions")):
            # the managed policies a launch reads: spawn's boundary, or one given to attach
            return f"arn:{partition}:iam::{account}:policy/spawn/spawn-boundary"
        return "*"
    if service == "s3":
        if action in _BUCKET_ACTIONS:
            return f"arn:{partition}:s3:::{bucket}"
        if "Object" in name:
            return f"arn:{partition}:s3:::{bucket}/spored-bundle/doctor"
        return "*"  # account-level, e.g. s3:ListAllMyBuckets
    if action == "ssm:GetParameter":
        return f"arn:{partition}:ssm:{region}::parameter{ami_parameter}"
    if action in _EC2_RESOURCE:
        return f"arn:{partition}:ec2:{region}:{account}:{_EC2_RESOURCE[action]}"
    return "*"


def simulation_groups(actions: Iterable[str], **where: str) -> dict[str, list[str]]:
    """Actions grouped by the resource to simulate them on (one API call per group)."""
    groups: dict[str, list[str]] = {}
    for action in sorted(set(actions)):
        groups.setdefault(resource_for(action, **where), []).append(action)
    return groups


@dataclass
class Verdicts:
    """What is known about each action: allowed, denied (with the evidence) or unknown."""

    allowed: dict[str, str] = field(default_factory=dict)
    denied: dict[str, str] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)

    def record(self, action: str, verdict: str, evidence: str) -> None:
        for table in (self.allowed, self.denied, self.unknown):
            table.pop(action, None)
        {"allowed": self.allowed, "denied": self.denied, "unknown": self.unknown}[verdict][action] = evidence


def read_simulation(results: Sequence[Mapping[str, Any]], verdicts: Verdicts) -> None:
    """Fold SimulatePrincipalPolicy ``EvaluationResults`` into ``verdicts``."""
    for result in results:
        action = str(result["EvalActionName"])
        decision = str(result["EvalDecision"])
        # With ResourceArns given, AWS lists missing keys per resource (EvaluationResult,
        # MissingContextValues: "If you include a list of resources, then any missing context
        # values are instead included under the ResourceSpecificResults section").
        missing = set(result.get("MissingContextValues") or [])
        for specific in result.get("ResourceSpecificResults") or []:
            missing.update(specific.get("MissingContextValues") or [])
        if decision == "allowed":
            verdicts.record(action, "allowed", "policy simulator")
        elif decision == "implicitDeny" and missing:
            verdicts.record(action, "unknown",
                            f"policy simulator: depends on {', '.join(sorted(missing))}")
        else:
            verdicts.record(action, "denied", f"policy simulator: {decision}")


def read_dry_run(code: str, actions: Sequence[str], verdicts: Verdicts, operation: str) -> None:
    """Fold one DryRun answer (the error code AWS returned) into ``verdicts``."""
    if code == DRYRUN_ALLOWED:
        for action in actions:
            verdicts.record(action, "allowed", f"DryRun {operation}")
    elif code in DRYRUN_DENIED:
        # The answer does not say which of the actions was refused: the operation's own action
        # carries the denial, naming the others it needs (tagging on create is checked with it).
        needs = f" (needs {' and '.join(actions)})" if len(actions) > 1 else ""
        verdicts.record(actions[0], "denied", f"DryRun {operation}: {code}{needs}")
        for action in actions[1:]:
            if action not in verdicts.allowed:
                verdicts.record(action, "unknown", f"DryRun {operation}: {code}")
    else:
        for action in actions:
            if action not in verdicts.allowed and action not in verdicts.denied:
                verdicts.record(action, "unknown", f"DryRun {operation} answered {code or 'nothing'}")
