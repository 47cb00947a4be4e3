"""Lint that tells the truth: an unknown condition key for an action is an error, except the exact
keys AWS documents as global (``controller.iam.lint.DOCUMENTED_GLOBAL_KEYS``, each with its
reference)."""

from __future__ import annotations

from typing import Any

import pytest

from controller.iam.lint import DOCUMENTED_GLOBAL_KEYS, lint_document

INSTANCE = "arn:aws:ec2:*:*:instance/*"


def _stop_with(condition: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ec2:StopInstances", "Resource": INSTANCE,
         "Condition": condition}]}


@pytest.mark.parametrize("condition", [
    {"StringEquals": {"aws:ARN": "${ec2:SourceInstanceARN}"}},   # the old self-scoping shape
    {"StringEquals": {"ec2:Bogus": "x"}},
    {"ArnLike": {"ec2:SourceInstanceArnX": "arn:aws:ec2:*:*:instance/*"}},   # near miss
])
def test_unknown_condition_key_is_an_error(condition: dict[str, Any]) -> None:
    report = lint_document(_stop_with(condition))
    assert [f.issue for f in report.errors] == ["UNKNOWN_CONDITION_FOR_ACTION"]
    assert report.warnings == []


@pytest.mark.parametrize("key", ["ec2:SourceInstanceARN", "EC2:sourceinstancearn"])
def test_documented_global_key_is_accepted(key: str) -> None:
    report = lint_document(_stop_with(
        {"ArnLike": {key: "arn:aws:ec2:*:*:instance/${ec2:InstanceId}"}}))
    assert report.findings == []


def test_documented_global_key_is_still_type_checked() -> None:
    report = lint_document(_stop_with({"ArnLike": {"ec2:SourceInstanceARN": "i-0abc"}}))
    assert [f.issue for f in report.errors] == ["MISMATCHED_TYPE"]


def test_an_unknown_key_next_to_a_documented_one_is_still_an_error() -> None:
    report = lint_document(_stop_with({"ArnLike": {
        "ec2:SourceInstanceARN": "arn:aws:ec2:*:*:instance/${ec2:InstanceId}",
        "aws:ARN": "arn:aws:ec2:*:*:instance/*"}}))
    assert [f.issue for f in report.errors] == ["UNKNOWN_CONDITION_FOR_ACTION"]
    assert "aws:ARN" in report.errors[0].detail


def test_parliaments_own_table_is_left_as_it_was() -> None:
    from parliament import statement

    lint_document(_stop_with({"ArnLike": {"ec2:SourceInstanceARN": "arn:aws:ec2:*:*:instance/*"}}))
    assert not set(DOCUMENTED_GLOBAL_KEYS) & set(statement.GLOBAL_CONDITION_KEYS)


def test_every_exception_carries_an_aws_reference() -> None:
    for key, entry in DOCUMENTED_GLOBAL_KEYS.items():
        assert entry.reference.startswith("https://docs.aws.amazon.com/"), key
        assert entry.kind in ("Arn", "String", "Bool", "Date", "Numeric", "Ip")


BAD = _stop_with({"StringEquals": {"aws:ARN": "${ec2:SourceInstanceARN}"}})


def test_lint_role_names_the_flag_of_the_bad_part() -> None:
    from controller.iam.lint import lint_role
    from spored.errors import ValidationError

    with pytest.raises(ValidationError) as err:
        lint_role({"spawn-templates": BAD})
    assert err.value.field == "--iam-policy" and "UNKNOWN_CONDITION_FOR_ACTION" in str(err.value)
    customer = "arn:aws:iam::123456789012:policy/mine"
    with pytest.raises(ValidationError) as err:
        lint_role({}, {customer: BAD}, boundary=customer)
    assert err.value.field == "--iam-permissions-boundary"


def test_lint_role_reports_aws_managed_findings_as_warnings() -> None:
    from controller.iam.lint import lint_role

    warnings = lint_role({}, {"arn:aws:iam::aws:policy/Example": BAD})
    assert len(warnings) == 1 and "(AWS managed)" in warnings[0]
    assert "UNKNOWN_CONDITION_FOR_ACTION" in warnings[0]


def test_without_parliament_a_launch_reports_managed_policies_as_not_linted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.iam import IamRequest, lint_composed_role, plan
    from controller.iam import lint as lint_module

    monkeypatch.setattr(lint_module, "lint_available", lambda: False)
    arn = "arn:aws:iam::123456789012:policy/mine"
    assert lint_composed_role(plan(IamRequest())) == []  # no AWS call either
    warnings = lint_composed_role(plan(IamRequest(managed_policy_arns=(arn,))))
    assert warnings == [f"{arn}: not linted (parliament is not installed: "
                        "pip install 'spawn-spored[lint]')"]
