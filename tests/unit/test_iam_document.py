"""IAM grammar checks and JSON positions for --iam-policy-file (pure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.iam import document as D
from controller.iam.iam_flags import read_policy_file
from spored.errors import ValidationError

GOOD: dict[str, Any] = {"Version": "2012-10-17", "Statement": {
    "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}}


def _check(doc: Any) -> dict[str, Any]:
    return D.validate(doc, source="p.json", field="--iam-policy-file")


def test_statement_object_is_normalised_to_a_list() -> None:
    assert isinstance(_check(GOOD)["Statement"], list)


def test_json_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{\n  "Version": "2012-10-17",\n  "Statement": [\n    {"Effect": "Allow",}\n  ]\n}\n')
    with pytest.raises(ValidationError) as err:
        read_policy_file(str(path))
    assert "line 4, column 24" in err.value.message
    assert str(path) in err.value.message


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda d: d.pop("Version"), "Version"),
    (lambda d: d.update(Version="2020-01-01"), "Version"),
    (lambda d: d.update(Statement=[]), "Statement"),
    (lambda d: d.update(Extra=1), "Extra"),
    (lambda d: d["Statement"].update(Effect="Permit"), "Effect"),
    (lambda d: d["Statement"].update(NotAction="s3:PutObject"), "exactly one of Action"),
    (lambda d: d["Statement"].pop("Resource"), "exactly one of Resource"),
    (lambda d: d["Statement"].update(Action="GetObject"), "not an action"),
    (lambda d: d["Statement"].update(Action=[]), "non-empty list"),
    (lambda d: d["Statement"].update(Resource="my-bucket"), "must be an ARN"),
    (lambda d: d["Statement"].update(Principal="*"), "Principal"),
    (lambda d: d["Statement"].update(Sid="has space"), "Sid"),
    (lambda d: d["Statement"].update(Condition={"StringEqualz": {"aws:username": "x"}}),
     "StringEqualz"),
    (lambda d: d["Statement"].update(Condition={"StringEquals": {"k": {"nested": 1}}}), "value"),
])
def test_grammar_errors_name_the_problem(mutate: Any, needle: str) -> None:
    import copy

    doc = copy.deepcopy(GOOD)
    mutate(doc)
    with pytest.raises(ValidationError) as err:
        _check(doc)
    assert needle in err.value.message


@pytest.mark.parametrize("operator", ["StringEquals", "ForAllValues:StringEquals",
                                      "ForAnyValue:StringLike", "ArnLikeIfExists", "Null",
                                      "NumericLessThanEquals", "Bool", "IpAddress"])
def test_known_operators(operator: str) -> None:
    assert D.known_operator(operator)


@pytest.mark.parametrize("operator", ["StringEqual", "NullIfExists", "ForEach:StringEquals"])
def test_unknown_operators(operator: str) -> None:
    assert not D.known_operator(operator)


def test_allows_matches_wildcards_and_unconditional_deny() -> None:
    doc = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"},
        {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"},
    ]}
    assert D.allows([doc], "ec2:DescribeTags")
    assert D.allows([doc], "EC2:describeinstances")
    assert D.allows([doc], "sqs:SendMessage")
    assert not D.allows([doc], "iam:PassRole")
    assert not D.allows([doc], "s3:DeleteObject")


def test_compact_size_excludes_whitespace() -> None:
    spaced = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject",
                                                       "Resource": "*"}]}
    assert D.compact_size(spaced) == len(D.canonical(spaced).replace(" ", ""))


def test_lint_command_exits_0_with_warnings_only(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from controller.cli import main

    path = tmp_path / "p.json"
    path.write_text('{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
                    '"Action": "s3:PutObject", "Resource": "*"}]}')
    assert main(["iam", "lint", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning:" in out and "RESOURCE_STAR" in out
    assert "0 error(s), 1 warning(s)" in out
