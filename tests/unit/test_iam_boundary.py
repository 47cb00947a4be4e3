"""spawn's permissions boundary: generated from the templates and the agent's policy, in size."""

from __future__ import annotations

import pytest

from controller.iam.agent_policy import agent_policy_document
from controller.iam.boundary import (
    MAX_MANAGED_POLICY_CHARS,
    TEMPLATES_SID,
    boundary_arn,
    boundary_document,
    outside_boundary,
)
from controller.iam.compose import IamRequest, plan
from controller.iam.document import allows, compact_size, statements
from controller.iam.lint import lint_document
from controller.iam.templates import TEMPLATES

ARN = boundary_arn("123456789012")


def test_arn_is_under_the_spawn_path() -> None:
    assert ARN == "arn:aws:iam::123456789012:policy/spawn/spawn-boundary"
    assert boundary_arn("123456789012", partition="aws-us-gov").startswith("arn:aws-us-gov:")


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_action_is_inside(name: str) -> None:
    for action in TEMPLATES[name].actions:
        assert allows([boundary_document()], action), action


def test_the_agents_statements_are_carried_with_their_conditions() -> None:
    bound = statements(boundary_document())
    for stmt in statements(agent_policy_document()):
        assert stmt in bound


def test_nothing_else_is_inside() -> None:
    services = {t.service for t in TEMPLATES.values()} | {"ec2"}
    doc = boundary_document()
    for stmt in statements(doc):
        actions = [stmt["Action"]] if isinstance(stmt["Action"], str) else stmt["Action"]
        assert {a.split(":")[0] for a in actions} <= services
    for denied in ("iam:CreateRole", "iam:PassRole", "ec2:RunInstances", "kms:Decrypt",
                   "ec2:AuthorizeSecurityGroupIngress", "sts:AssumeRole", "*"):
        assert not allows([doc], denied), denied
    templates = next(s for s in statements(doc) if s["Sid"] == TEMPLATES_SID)
    assert {"s3:*", "dynamodb:*", "sqs:*"} <= set(templates["Action"])
    assert "s3:GetObject" not in templates["Action"]  # folded into s3:*


def test_size_is_under_the_managed_policy_limit_with_room() -> None:
    assert compact_size(boundary_document()) < MAX_MANAGED_POLICY_CHARS // 2


def test_the_boundary_lints_without_errors() -> None:
    assert lint_document(boundary_document()).errors == []


def test_outside_boundary_names_what_a_policy_file_cannot_use() -> None:
    doc = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "iam:PassRole", "kms:Decrypt"],
         "Resource": "*"},
        {"Effect": "Deny", "Action": "ec2:*", "Resource": "*"}]}
    assert outside_boundary(doc) == ["iam:PassRole", "kms:Decrypt"]


def test_account_boundary_is_attached_but_is_no_policy_flag() -> None:
    plain = plan(IamRequest())
    bounded = plan(IamRequest(account_boundary=ARN))
    assert bounded.permissions_boundary == ARN and plain.permissions_boundary is None
    assert bounded.role_name != plain.role_name  # a role without the boundary is never reused
    assert bounded.has_policy_flags is False
    explicit = plan(IamRequest(account_boundary=ARN,
                               permissions_boundary="arn:aws:iam::123456789012:policy/other"))
    assert explicit.permissions_boundary == "arn:aws:iam::123456789012:policy/other"


def test_a_policy_file_beyond_the_boundary_is_warned_about() -> None:
    custom = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "rds:DescribeDBInstances"],
         "Resource": "*"}]}
    warned = plan(IamRequest(custom_document=custom, policy_file="job.json",
                             account_boundary=ARN)).warnings
    assert any("rds:DescribeDBInstances" in w and "boundary" in w for w in warned)
    assert not any("boundary" in w for w in plan(IamRequest(custom_document=custom,
                                                            policy_file="job.json")).warnings)


# ---- lint: one action split across statements, as AWS's RunInstances examples do ----

def _run_instances(*resource_sets: list[str]) -> dict[str, object]:
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ec2:RunInstances", "Resource": resources}
        for resources in resource_sets]}


def test_a_split_that_names_every_required_resource_type_is_a_warning() -> None:
    report = lint_document(_run_instances(
        ["arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*:*:volume/*"],
        ["arn:aws:ec2:*::image/*", "arn:aws:ec2:*:*:subnet/*",
         "arn:aws:ec2:*:*:network-interface/*", "arn:aws:ec2:*:*:security-group/*"]))
    assert report.errors == []
    assert {f.issue for f in report.warnings} == {"RESOURCE_MISMATCH"}


def test_a_required_resource_type_no_statement_names_stays_an_error() -> None:
    report = lint_document(_run_instances(
        ["arn:aws:ec2:*:*:instance/*"],
        ["arn:aws:ec2:*::image/*", "arn:aws:ec2:*:*:subnet/*"]))  # no interface, no group
    assert [f.issue for f in report.errors] == ["RESOURCE_MISMATCH", "RESOURCE_MISMATCH"]
