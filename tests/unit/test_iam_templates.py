"""Templates: the seed's action lists, scoping grammar, suggestions, parliament-clean documents."""

from __future__ import annotations

import pytest

from controller.iam import templates as T
from controller.iam.lint import lint_document
from spored.errors import ExitStatus, ValidationError

# The seed document's lists, copied as data (iam-policies-reference.md).
SEED = {
    "s3:FullAccess": ["s3:*"],
    "s3:ReadOnly": ["s3:GetObject", "s3:ListBucket"],
    "s3:WriteOnly": ["s3:PutObject", "s3:PutObjectAcl"],
    "dynamodb:FullAccess": ["dynamodb:*"],
    "dynamodb:ReadOnly": ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan",
                          "dynamodb:BatchGetItem"],
    "dynamodb:WriteOnly": ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
                           "dynamodb:BatchWriteItem"],
    "sqs:FullAccess": ["sqs:*"],
    "sqs:ReadOnly": ["sqs:ReceiveMessage", "sqs:GetQueueAttributes"],
    "sqs:WriteOnly": ["sqs:SendMessage", "sqs:SendMessageBatch"],
    "logs:WriteOnly": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
    "ecr:ReadOnly": ["ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability",
                     "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
    "secretsmanager:ReadOnly": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
    "ssm:ReadOnly": ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"],
}

SCOPES = {"s3": "my-bucket/data/*", "dynamodb": "table/my-table", "sqs": "my-queue",
          "logs": "/spawn/job", "ecr": "team/image", "secretsmanager": "prod/db",
          "ssm": "/my-app/*"}


def test_exactly_the_seed_templates() -> None:
    assert {n: list(t.seed_actions) for n, t in T.TEMPLATES.items()} == SEED


def test_granted_actions_are_the_seeds_except_the_one_non_iam_action() -> None:
    for name, template in T.TEMPLATES.items():
        expected = [a for a in SEED[name] if a != "sqs:SendMessageBatch"]
        assert list(template.actions) == expected
    assert "sqs:SendMessage" in T.TEMPLATES["sqs:WriteOnly"].note


def test_unscoped_template_keeps_star() -> None:
    doc = T.document(T.parse_ref("s3:ReadOnly"))
    assert doc == {"Version": "2012-10-17", "Statement": [
        {"Sid": "S3ReadOnly", "Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
         "Resource": "*"}]}


def test_s3_scope_to_bucket_prefix() -> None:
    stmts = T.statements(T.parse_ref("s3:ReadOnly@my-bucket/data/*"))
    by_action = {str(s["Action"]): s for s in stmts}
    assert by_action["s3:GetObject"]["Resource"] == "arn:aws:s3:::my-bucket/data/*"
    listing = by_action["s3:ListBucket"]
    assert listing["Resource"] == "arn:aws:s3:::my-bucket"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["data/*"]}}


def test_s3_scope_to_whole_bucket() -> None:
    stmts = T.statements(T.parse_ref("s3:WriteOnly@my-bucket"))
    assert stmts[0]["Resource"] == "arn:aws:s3:::my-bucket/*"


def test_dynamodb_scope_includes_indexes_with_wildcard_region_account() -> None:
    stmt = T.statements(T.parse_ref("dynamodb:ReadOnly@table/my-table"))[0]
    assert stmt["Resource"] == ["arn:aws:dynamodb:*:*:table/my-table",
                                "arn:aws:dynamodb:*:*:table/my-table/index/*"]
    assert T.statements(T.parse_ref("dynamodb:ReadOnly@my-table"))[0] == stmt


def test_sqs_and_secret_and_ssm_scopes() -> None:
    assert T.statements(T.parse_ref("sqs:WriteOnly@jobs-*"))[0]["Resource"] == \
        "arn:aws:sqs:*:*:jobs-*"
    assert T.statements(T.parse_ref("secretsmanager:ReadOnly@prod/db"))[0]["Resource"] == \
        "arn:aws:secretsmanager:*:*:secret:prod/db-??????"
    assert T.statements(T.parse_ref("ssm:ReadOnly@/my-app/*"))[0]["Resource"] == \
        "arn:aws:ssm:*:*:parameter/my-app/*"


def test_ecr_scope_keeps_authorization_token_on_star() -> None:
    stmts = T.statements(T.parse_ref("ecr:ReadOnly@team/image"))
    token = [s for s in stmts if s["Action"] == "ecr:GetAuthorizationToken"]
    assert token and token[0]["Resource"] == "*"
    scoped = next(s for s in stmts if s is not token[0])
    assert scoped["Resource"] == "arn:aws:ecr:*:*:repository/team/image"
    assert "ecr:GetAuthorizationToken" not in scoped["Action"]


def test_unknown_template_names_it_and_suggests_closest() -> None:
    with pytest.raises(ValidationError) as err:
        T.parse_list("s3:ReadOnly,s3:ReadOly")
    assert "s3:ReadOly" in err.value.message
    assert err.value.hint == "did you mean s3:ReadOnly?"
    assert err.value.exit_status == ExitStatus.USAGE


@pytest.mark.parametrize("entry", ["s3:ReadOnly@Bad_Bucket", "s3:ReadOnly@ab",
                                   "sqs:WriteOnly@", "dynamodb:ReadOnly@table/has space",
                                   "s3:ReadOnly@arn:aws:s3:::bucket"])
def test_bad_scope_is_rejected_with_the_accepted_form(entry: str) -> None:
    with pytest.raises(ValidationError) as err:
        T.parse_ref(entry)
    assert "accepted" in err.value.message


def test_duplicates_collapse() -> None:
    assert [r.text for r in T.parse_list("s3:ReadOnly, s3:ReadOnly,logs:WriteOnly")] == \
        ["s3:ReadOnly", "logs:WriteOnly"]


@pytest.mark.parametrize("name", sorted(T.TEMPLATES))
def test_every_template_lints_clean_scoped_and_unscoped(name: str) -> None:
    service = T.TEMPLATES[name].service
    for ref in (T.parse_ref(name), T.parse_ref(f"{name}@{SCOPES[service]}")):
        report = lint_document(T.document(ref), source=ref.text)
        assert report.errors == [], [f.text(ref.text) for f in report.errors]


def test_cli_templates_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from controller.cli import main

    assert main(["iam", "templates", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["templates"]
    assert [r["name"] for r in rows] == list(SEED)
    assert {r["name"]: r["seed_actions"] for r in rows} == SEED
    assert main(["iam", "show", "sqs:WriteOnly@jobs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == T.document(T.parse_ref("sqs:WriteOnly@jobs"))
