"""The scoped CLI policy: its shape, its size and its lint (the evaluator matrix proves its
conditions; see the second half of this file)."""

from __future__ import annotations

import json

from controller import permissions
from controller.iam.cli_policy import UNSCOPED, scope_of, scoped_policy
from controller.iam.document import compact_size, statements
from controller.iam.lint import lint_document

MAX_MANAGED_POLICY_CHARS = 6_144  # IAM quotas; the policy is attached as a managed policy


def _by_sid() -> dict[str, dict[str, object]]:
    return {str(s["Sid"]): s for s in statements(scoped_policy())}


def test_every_declared_action_has_its_statement() -> None:
    assert UNSCOPED not in _by_sid()
    unplaced = [a for a in permissions.required_actions("cli") if scope_of(a) == (UNSCOPED,)]
    assert unplaced == []


def test_an_action_nobody_placed_still_works_but_is_visible() -> None:
    permissions.declare("test", "ec2", "ModifyInstanceAttribute", "ec2:ModifyInstanceAttribute")
    try:
        stmt = next(s for s in statements(scoped_policy()) if s["Sid"] == UNSCOPED)
        assert stmt["Action"] == "ec2:ModifyInstanceAttribute" and stmt["Resource"] == "*"
    finally:
        permissions.REGISTRY.pop()


def test_no_seed_action_spawn_never_calls() -> None:
    text = json.dumps(scoped_policy())
    assert "ec2:CreateKeyPair" not in text


def test_guard_rails_are_explicit_denies() -> None:
    sids = _by_sid()
    assert sids["DenyBoundaryRemoval"]["Action"] == "iam:DeleteRolePermissionsBoundary"
    assert sids["DenyBoundaryEdits"]["Resource"] == "arn:aws:iam::*:policy/spawn/spawn-boundary"
    assert sids["DenyTrustChanges"]["Action"] == "iam:UpdateAssumeRolePolicy"
    allowed = [s for s in statements(scoped_policy()) if s["Effect"] == "Allow"]
    assert "DeleteRolePermissionsBoundary" not in json.dumps(allowed)


def test_fits_a_managed_policy() -> None:
    assert compact_size(scoped_policy()) < MAX_MANAGED_POLICY_CHARS


def test_lints_without_errors() -> None:
    report = lint_document(scoped_policy())
    assert report.errors == []
    assert {f.issue for f in report.warnings} <= {"MISMATCHED_TYPE_BUT_USABLE", "RESOURCE_MISMATCH"}


def test_other_partitions() -> None:
    text = json.dumps(scoped_policy(partition="aws-us-gov"))
    assert "arn:aws:" not in text and "arn:aws-us-gov:iam::${aws:PrincipalAccount}:policy/spawn/" in text
