"""Composition: agent policy always, content-addressed names, limits, least-privilege warnings."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from controller.iam import IamRequest, add_iam_arguments, agent_policy_document, plan, request_from_args
from controller.iam.compose import MAX_INLINE_CHARS, POLICY_AGENT, TRUST_POLICY
from spored.errors import ValidationError


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_iam_arguments(parser)
    return parser.parse_args(list(argv))


def _plan(*argv: str):  # type: ignore[no-untyped-def]
    return plan(request_from_args(_parse(*argv)))


def _policy_file(tmp_path: Path, name: str, actions: list[str]) -> str:
    path = tmp_path / name
    path.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": actions, "Resource": "arn:aws:s3:::my-bucket/*"}]}))
    return str(path)


def test_default_role_has_only_the_agent_policy() -> None:
    p = _plan()
    assert p.inline_policies == {POLICY_AGENT: agent_policy_document()}
    assert p.role_name.startswith("spawn-") and len(p.role_name) == len("spawn-") + 12
    assert p.profile_name == p.role_name and p.path == "/spawn/"
    assert p.trust_policy == TRUST_POLICY
    assert p.tags["spawn:managed"] == "true"


def test_agent_policy_present_with_every_flag_combination(tmp_path: Path) -> None:
    f = _policy_file(tmp_path, "p.json", ["s3:GetObject"])
    for argv in (["--iam-policy", "s3:ReadOnly"], ["--iam-policy-file", f],
                 ["--iam-managed-policies", "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"],
                 ["--iam-role", "mine"], ["--iam-permissions-boundary",
                                          "arn:aws:iam::123456789012:policy/boundary"]):
        assert _plan(*argv).inline_policies[POLICY_AGENT] == agent_policy_document()


def test_equal_requests_share_a_name_and_any_change_gives_a_new_one() -> None:
    a = _plan("--iam-policy", "s3:ReadOnly,logs:WriteOnly")
    b = _plan("--iam-policy", "s3:ReadOnly,logs:WriteOnly")
    assert a.role_name == b.role_name
    names = {a.role_name,
             _plan("--iam-policy", "s3:ReadOnly").role_name,
             _plan("--iam-policy", "s3:ReadOnly@my-bucket").role_name,
             _plan("--iam-policy", "s3:ReadOnly,logs:WriteOnly", "--iam-permissions-boundary",
                   "arn:aws:iam::123456789012:policy/b").role_name,
             _plan("--iam-policy", "s3:ReadOnly,logs:WriteOnly", "--iam-managed-policies",
                   "arn:aws:iam::aws:policy/ReadOnlyAccess").role_name}
    assert len(names) == 5


def test_template_order_does_not_change_the_name() -> None:
    assert _plan("--iam-policy", "s3:ReadOnly,logs:WriteOnly,sqs:ReadOnly@q").role_name == \
        _plan("--iam-policy", "sqs:ReadOnly@q,logs:WriteOnly,s3:ReadOnly").role_name


def test_managed_order_does_not_change_the_name() -> None:
    x, y = "arn:aws:iam::aws:policy/A", "arn:aws:iam::aws:policy/B"
    assert _plan("--iam-managed-policies", f"{x},{y}").role_name == \
        _plan("--iam-managed-policies", f"{y},{x}").role_name


def test_name_depends_on_file_content_not_path(tmp_path: Path) -> None:
    one = _policy_file(tmp_path, "one.json", ["s3:GetObject"])
    two = _policy_file(tmp_path, "two.json", ["s3:GetObject"])
    other = _policy_file(tmp_path, "three.json", ["s3:PutObject"])
    assert _plan("--iam-policy-file", one).role_name == _plan("--iam-policy-file", two).role_name
    assert _plan("--iam-policy-file", one).role_name != _plan("--iam-policy-file", other).role_name


def test_default_name_is_pinned() -> None:
    # Changing the agent policy or the hash material renames every role (old ones become
    # cleanup candidates); this pins the name so such a change is deliberate. Last change: the
    # agent's self-scoping moved from aws:ARN to ArnLike ec2:SourceInstanceARN (docs/iam.md), so
    # no launch reuses a role carrying the policy AWS never matched.
    assert _plan().role_name == "spawn-ef1bfecf2798"


def test_named_role_keeps_its_name() -> None:
    p = _plan("--iam-role", "ml-training", "--iam-policy", "s3:ReadOnly")
    assert (p.role_name, p.profile_name, p.named) == ("ml-training", "ml-training", True)


def test_warnings_for_star_and_full_access() -> None:
    warnings = _plan("--iam-policy", "s3:FullAccess,sqs:ReadOnly@q,logs:WriteOnly").warnings
    text = "\n".join(warnings)
    assert "s3:FullAccess grants every s3 action" in text
    assert "logs:WriteOnly applies to every resource" in text
    assert "sqs:ReadOnly" not in text


def test_no_warnings_when_everything_is_scoped() -> None:
    assert _plan("--iam-policy", "s3:ReadOnly@my-bucket/in/*,sqs:WriteOnly@out").warnings == []


def test_managed_full_access_warns() -> None:
    p = _plan("--iam-managed-policies", "arn:aws:iam::aws:policy/AmazonS3FullAccess")
    assert any("AmazonS3FullAccess" in w for w in p.warnings)


def test_inline_size_limit_names_the_limit(tmp_path: Path) -> None:
    actions = [f"s3:GetObject{'x' * 20}{i}" for i in range(600)]
    doc = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": actions, "Resource": "*"}]}
    with pytest.raises(ValidationError) as err:
        plan(IamRequest(custom_document=doc, policy_file="big.json"))
    assert str(MAX_INLINE_CHARS) in err.value.message.replace(",", "")
    assert err.value.field == "--iam-policy-file"


def test_managed_limit() -> None:
    arns = ",".join(f"arn:aws:iam::aws:policy/P{i}" for i in range(11))
    with pytest.raises(ValidationError) as err:
        _plan("--iam-managed-policies", arns)
    assert "limit of 10" in err.value.message


def test_help_documents_the_scoping_syntax_and_force() -> None:
    parser = argparse.ArgumentParser()
    add_iam_arguments(parser)
    text = "".join(parser.format_help().split())  # argparse wraps lines at hyphens and spaces
    assert "TEMPLATE[@SCOPE]" in text
    assert "s3:ReadOnly@my-bucket/data/*" in text and "dynamodb:ReadOnly@table/my-table" in text
    assert "lackstheagent'spermissions" in text


def test_missing_parliament_is_a_clear_usage_error(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from spored.errors import ExitStatus, SpawnError

    monkeypatch.setitem(sys.modules, "parliament", None)  # import parliament -> ImportError
    path = _policy_file(tmp_path, "p.json", ["s3:GetObject"])
    with pytest.raises(SpawnError) as err:
        request_from_args(_parse("--iam-policy-file", path))
    assert err.value.exit_status == ExitStatus.USAGE
    assert "parliament" in err.value.message and "[lint]" in (err.value.hint or "")
