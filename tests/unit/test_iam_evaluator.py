"""The test evaluator against AWS's documented evaluation logic (see tests/iam_evaluator.py).

Each case is a rule from AWS's IAM User Guide ("Policy evaluation logic", "Condition operators",
"Multiple context keys or values", "Single-valued vs. multivalued context keys", "Policy
variables"); several are the guide's own examples.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.iam_evaluator import Decision, Effect, NotModelled, evaluate
from tests.iam_requests import (
    Caller,
    Instance,
    UndocumentedKey,
    instance_request,
    region_request,
    request,
)

ARN = "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc"
ALLOW = Effect.ALLOW
EXPLICIT = Effect.EXPLICIT_DENY
IMPLICIT = Effect.IMPLICIT_DENY


def policy(*statements: dict[str, Any], version: str = "2012-10-17") -> dict[str, Any]:
    return {"Version": version, "Statement": list(statements)}


def allow(action: Any = "ec2:TerminateInstances", resource: Any = "*", sid: str = "A",
          **condition: Any) -> dict[str, Any]:
    stmt: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": action, "Resource": resource}
    if condition:
        stmt["Condition"] = condition
    return stmt


def cond(operator: str, key: str, value: Any) -> dict[str, Any]:
    return {"Condition": {operator: {key: value}}}


def decide(stmt: dict[str, Any], context: dict[str, Any], *, action: str = "ec2:TerminateInstances",
           resource: str = ARN, version: str = "2012-10-17") -> Effect:
    return evaluate([policy(stmt, version=version)], action, resource, context).effect


def with_cond(operator: str, key: str, value: Any) -> dict[str, Any]:
    return {**allow(), **cond(operator, key, value)}


# ---- decision: default deny, allow, explicit deny wins, boundary ----

def test_no_statement_is_an_implicit_deny() -> None:
    d = evaluate([policy(allow(action="ec2:StopInstances"))], "ec2:TerminateInstances", ARN, {})
    assert d.effect is IMPLICIT and not d.allowed


def test_allow_names_its_statement() -> None:
    d = evaluate([policy(allow(sid="EndSelf"))], "ec2:TerminateInstances", ARN, {})
    assert d == Decision(ALLOW, ("EndSelf",), ())


def test_explicit_deny_wins_over_allow_in_another_policy() -> None:
    deny = {"Sid": "NoEnd", "Effect": "Deny", "Action": "ec2:*", "Resource": "*"}
    d = evaluate([policy(allow()), policy(deny)], "ec2:TerminateInstances", ARN, {})
    assert d.effect is EXPLICIT and d.denied_by == ("NoEnd",)
    assert "explicit deny by NoEnd" in str(d)


def test_statement_without_sid_is_named_by_position() -> None:
    stmt = allow()
    del stmt["Sid"]
    d = evaluate([policy(allow(action="s3:*")), policy(stmt)], "ec2:TerminateInstances", ARN, {})
    assert d.allowed_by == ("policy1.statement0",)


def test_boundary_intersects_with_identity_allow() -> None:
    identity = [policy(allow(action="ec2:*"))]
    boundary = [policy(allow(action="ec2:StopInstances", sid="Ceiling"))]
    assert evaluate(identity, "ec2:StopInstances", ARN, {}, boundary).effect is ALLOW
    d = evaluate(identity, "ec2:TerminateInstances", ARN, {}, boundary)
    assert d.effect is IMPLICIT and d.boundary_allowed_by == ()
    assert "not by the boundary" in str(d)


def test_boundary_alone_grants_nothing() -> None:
    boundary = [policy(allow(action="ec2:*"))]
    assert evaluate([], "ec2:StopInstances", ARN, {}, boundary).effect is IMPLICIT


def test_deny_in_boundary_wins() -> None:
    boundary = [policy(allow(action="*"), {"Sid": "B", "Effect": "Deny", "Action": "ec2:Stop*",
                                           "Resource": "*"})]
    d = evaluate([policy(allow(action="*"))], "ec2:StopInstances", ARN, {}, boundary)
    assert d.effect is EXPLICIT and d.denied_by == ("boundary:B",)


# ---- Action / NotAction, Resource / NotResource ----

@pytest.mark.parametrize(("pattern", "effect"), [
    ("ec2:TerminateInstances", ALLOW), ("EC2:terminateinstances", ALLOW), ("ec2:Terminate*", ALLOW),
    ("ec2:*", ALLOW), ("*", ALLOW), ("ec2:Terminate?nstances", ALLOW), ("ec2:Stop*", IMPLICIT),
    ("ec2:TerminateInstance", IMPLICIT), ("s3:*", IMPLICIT),
])
def test_action_wildcards_are_case_insensitive(pattern: str, effect: Effect) -> None:
    assert decide(allow(action=pattern), {}) is effect


def test_not_action_applies_to_every_other_action() -> None:
    stmt = {"Effect": "Allow", "NotAction": ["ec2:Terminate*"], "Resource": "*"}
    assert decide(stmt, {}) is IMPLICIT
    assert decide(stmt, {}, action="ec2:StopInstances") is ALLOW


@pytest.mark.parametrize(("pattern", "effect"), [
    ("*", ALLOW), (ARN, ALLOW), ("arn:aws:ec2:*:*:instance/*", ALLOW),
    ("arn:aws:ec2:us-east-?:*:instance/i-*", ALLOW), ("arn:aws:ec2:*:*:instance/i-0ABC", IMPLICIT),
    ("arn:aws:ec2:*:*:volume/*", IMPLICIT), ("arn:aws-cn:ec2:*:*:instance/*", IMPLICIT),
    # a wildcard covers one component only: * in the region does not swallow the account
    ("arn:aws:ec2:*:instance/*", IMPLICIT),
])
def test_resource_matches_per_arn_component(pattern: str, effect: Effect) -> None:
    if pattern == "arn:aws:ec2:*:instance/*":
        with pytest.raises(NotModelled, match="six"):
            decide(allow(resource=pattern), {})
        return
    assert decide(allow(resource=pattern), {}) is effect


def test_resource_scoped_statement_does_not_cover_a_star_request() -> None:
    # Actions without resource types are requested on "*": only Resource "*" covers them.
    stmt = allow(action="ec2:DescribeTags", resource="arn:aws:ec2:*:*:instance/*")
    assert decide(stmt, {}, action="ec2:DescribeTags", resource="*") is IMPLICIT
    assert decide(allow(action="ec2:DescribeTags"), {}, action="ec2:DescribeTags",
                  resource="*") is ALLOW


def test_not_resource() -> None:
    stmt = {"Effect": "Allow", "Action": "ec2:*", "NotResource": "arn:aws:ec2:*:*:instance/i-0abc"}
    assert decide(stmt, {}) is IMPLICIT
    assert decide(stmt, {}, resource=ARN.replace("0abc", "0def")) is ALLOW


# ---- condition operators ----

@pytest.mark.parametrize(("operator", "value", "context", "effect"), [
    ("StringEquals", "true", "true", ALLOW),
    ("StringEquals", "true", "TRUE", IMPLICIT),        # case-sensitive
    ("StringEquals", "true", "true ", IMPLICIT),
    ("StringEquals", "t*", "true", IMPLICIT),          # no wildcards in Equals
    ("StringEquals", "t*", "t*", ALLOW),
    ("StringEquals", ["no", "true"], "true", ALLOW),   # several values: OR
    ("StringNotEquals", "true", "false", ALLOW),
    ("StringNotEquals", ["a", "b"], "b", IMPLICIT),    # negated with several values: NOR
    ("StringNotEquals", ["a", "b"], "c", ALLOW),
    ("StringEqualsIgnoreCase", "true", "TRUE", ALLOW),
    ("StringNotEqualsIgnoreCase", "true", "TRUE", IMPLICIT),
    ("StringLike", "t?u*", "true", ALLOW),
    ("StringLike", "t?u*", "tr", IMPLICIT),
    ("StringNotLike", "f*", "false", IMPLICIT),
    ("StringNotLike", "f*", "true", ALLOW),
    ("Bool", "true", "true", ALLOW),
    ("Bool", True, "true", ALLOW),                     # JSON true is the string "true"
    ("Bool", "true", "false", IMPLICIT),
])
def test_string_and_bool_operators(operator: str, value: Any, context: str, effect: Effect) -> None:
    assert decide(with_cond(operator, "k:key", value), {"k:key": context}) is effect


@pytest.mark.parametrize(("operator", "value", "context", "effect"), [
    ("ArnEquals", "arn:aws:ec2:*:*:instance/i-0abc", ARN, ALLOW),   # ArnEquals takes wildcards
    ("ArnLike", "arn:aws:ec2:*:*:instance/*", ARN, ALLOW),
    ("ArnLike", "arn:aws:ec2:*:*:instance/i-0def", ARN, IMPLICIT),
    ("ArnLike", "arn:aws:ec2:*:*:instance/*", "not-an-arn", IMPLICIT),
    ("ArnNotEquals", "arn:aws:ec2:*:*:instance/i-0def", ARN, ALLOW),
    ("ArnNotLike", "arn:aws:ec2:*:*:instance/*", ARN, IMPLICIT),
])
def test_arn_operators(operator: str, value: str, context: str, effect: Effect) -> None:
    assert decide(with_cond(operator, "ec2:SourceInstanceARN", value),
                  {"ec2:SourceInstanceARN": context}) is effect


@pytest.mark.parametrize(("operator", "effect"), [
    # Absent key: false ... except negated operators, ...IfExists and Null.
    ("StringEquals", IMPLICIT), ("StringLike", IMPLICIT), ("ArnLike", IMPLICIT), ("Bool", IMPLICIT),
    ("StringNotEquals", ALLOW), ("StringNotLike", ALLOW), ("ArnNotLike", ALLOW),
    ("StringEqualsIfExists", ALLOW), ("ArnLikeIfExists", ALLOW),
])
def test_absent_key(operator: str, effect: Effect) -> None:
    assert decide(with_cond(operator, "ec2:SourceInstanceARN", "arn:aws:ec2:*:*:instance/*"),
                  {}) is effect


def test_if_exists_still_compares_a_present_key() -> None:
    stmt = with_cond("StringEqualsIfExists", "k:key", "a")
    assert decide(stmt, {"k:key": "a"}) is ALLOW
    assert decide(stmt, {"k:key": "b"}) is IMPLICIT


@pytest.mark.parametrize(("value", "context", "effect"), [
    ("true", {}, ALLOW), ("true", {"aws:TagKeys": []}, ALLOW),
    ("true", {"aws:TagKeys": ["a"]}, IMPLICIT),
    ("false", {"aws:TagKeys": ["a"]}, ALLOW), ("false", {}, IMPLICIT), (False, {}, IMPLICIT),
])
def test_null(value: Any, context: dict[str, Any], effect: Effect) -> None:
    assert decide(with_cond("Null", "aws:TagKeys", value), context) is effect


def test_condition_key_names_are_case_insensitive() -> None:
    stmt = with_cond("StringEquals", "EC2:RESOURCETAG/spawn:managed", "true")
    assert decide(stmt, {"ec2:ResourceTag/spawn:managed": "true"}) is ALLOW


def test_several_keys_and_operators_are_anded() -> None:
    stmt = {**allow(), "Condition": {"StringEquals": {"a:x": "1", "a:y": "2"},
                                     "StringLike": {"a:z": "3*"}}}
    assert decide(stmt, {"a:x": "1", "a:y": "2", "a:z": "33"}) is ALLOW
    assert decide(stmt, {"a:x": "1", "a:y": "2", "a:z": "4"}) is IMPLICIT
    assert decide(stmt, {"a:x": "1", "a:z": "33"}) is IMPLICIT


# ---- set operators on multivalued keys ----

@pytest.mark.parametrize(("operator", "keys", "effect"), [
    ("ForAllValues:StringEquals", ["a", "b"], ALLOW),
    ("ForAllValues:StringEquals", ["a", "x"], IMPLICIT),
    ("ForAllValues:StringEquals", [], ALLOW),        # AWS: true when the key is empty ...
    ("ForAllValues:StringEquals", None, ALLOW),      # ... or absent
    ("ForAnyValue:StringEquals", ["x", "a"], ALLOW),
    ("ForAnyValue:StringEquals", ["x"], IMPLICIT),
    ("ForAnyValue:StringEquals", None, IMPLICIT),    # false when absent
    ("ForAnyValue:StringEqualsIfExists", None, ALLOW),
    ("ForAllValues:StringLike", ["a1", "b"], IMPLICIT),
    ("ForAllValues:StringNotLike", ["x", "y"], ALLOW),   # every value is like neither a nor b
    ("ForAllValues:StringNotLike", ["x", "a"], IMPLICIT),
])
def test_set_operators(operator: str, keys: list[str] | None, effect: Effect) -> None:
    context = {} if keys is None else {"aws:TagKeys": keys}
    assert decide(with_cond(operator, "aws:TagKeys", ["a", "b"]), context) is effect


def test_plain_operator_on_a_multivalued_request_key_is_refused() -> None:
    with pytest.raises(NotModelled, match="ForAllValues"):
        decide(with_cond("StringEquals", "aws:TagKeys", "a"), {"aws:TagKeys": ["a", "b"]})


def test_aws_documented_example_for_all_values_deny() -> None:
    # IAM User Guide, multivalued context key examples: Deny iam:Tag* with
    # ForAllValues:StringNotLike aws:TagKeys "key1*": "key2:audit" and an absent key both match.
    deny = {"Effect": "Deny", "Action": ["iam:Tag*"], "Resource": ["*"],
            "Condition": {"ForAllValues:StringNotLike": {"aws:TagKeys": "key1*"}}}
    docs = [policy(allow(action="iam:*", sid="All"), deny)]

    def effect(ctx: dict[str, Any]) -> Effect:
        return evaluate(docs, "iam:TagRole", "*", ctx).effect

    assert effect({"aws:TagKeys": ["key1:legal"]}) is ALLOW
    assert effect({"aws:TagKeys": ["key1:hr", "key1:personnel"]}) is ALLOW
    assert effect({"aws:TagKeys": ["key2:audit"]}) is EXPLICIT
    assert effect({}) is EXPLICIT


# ---- policy variables ----

SELF = "arn:aws:ec2:*:*:instance/${ec2:InstanceId}"


@pytest.mark.parametrize(("context", "effect"), [
    ({"ec2:InstanceID": "i-0abc", "ec2:SourceInstanceARN": ARN}, ALLOW),
    ({"ec2:InstanceID": "i-0def", "ec2:SourceInstanceARN": ARN}, IMPLICIT),
    ({"ec2:SourceInstanceARN": ARN}, IMPLICIT),        # variable's key missing: false
    ({"ec2:InstanceID": "i-0abc"}, IMPLICIT),          # compared key missing: false
])
def test_variable_in_a_condition_value(context: dict[str, str], effect: Effect) -> None:
    assert decide(with_cond("ArnLike", "ec2:SourceInstanceARN", SELF), context) is effect


def test_variable_names_are_case_insensitive() -> None:
    stmt = with_cond("StringEquals", "k:a", "${K:B}")
    assert decide(stmt, {"k:a": "v", "k:b": "v"}) is ALLOW


def test_substituted_value_is_literal_not_a_wildcard() -> None:
    stmt = with_cond("StringLike", "k:a", "x-${k:b}")
    assert decide(stmt, {"k:a": "x-anything", "k:b": "*"}) is IMPLICIT
    assert decide(stmt, {"k:a": "x-*", "k:b": "*"}) is ALLOW


def test_missing_variable_in_negated_operator_fails_closed() -> None:
    stmt = with_cond("StringNotEquals", "k:a", "${k:missing}")
    assert decide(stmt, {"k:a": "v"}) is IMPLICIT


def test_variable_default_value() -> None:
    stmt = with_cond("StringEquals", "k:a", "${k:missing, 'it''s'}")
    assert decide(stmt, {"k:a": "it's"}) is ALLOW


@pytest.mark.parametrize(("escape", "literal"), [("${*}", "*"), ("${?}", "?"), ("${$}", "$")])
def test_escapes_are_literal(escape: str, literal: str) -> None:
    stmt = with_cond("StringLike", "k:a", f"a{escape}")
    assert decide(stmt, {"k:a": f"a{literal}"}) is ALLOW
    assert decide(stmt, {"k:a": "ab"}) is IMPLICIT


def test_variable_in_resource() -> None:
    stmt = allow(resource="arn:aws:ec2:*:*:instance/${aws:userid}")
    assert decide(stmt, {"aws:userid": "i-0abc"}) is ALLOW
    assert decide(stmt, {"aws:userid": "i-0def"}) is IMPLICIT
    assert decide(stmt, {}) is IMPLICIT


def test_variables_only_in_version_2012_10_17() -> None:
    stmt = with_cond("StringEquals", "k:a", "${k:b}")
    assert decide(stmt, {"k:a": "v", "k:b": "v"}, version="2008-10-17") is IMPLICIT
    assert decide(stmt, {"k:a": "${k:b}"}, version="2008-10-17") is ALLOW


@pytest.mark.parametrize("operator", ["NumericLessThan", "DateGreaterThan", "IpAddress",
                                      "BinaryEquals"])
def test_unmodelled_operators_are_refused(operator: str) -> None:
    with pytest.raises(NotModelled):
        decide(with_cond(operator, "k:a", "1"), {"k:a": "1"})


# ---- request contexts from documented keys only ----

def test_request_refuses_an_undocumented_key() -> None:
    with pytest.raises(UndocumentedKey, match="aws:ARN"):
        request("ec2:TerminateInstances", "instance", ARN, {"aws:ARN": ARN})
    with pytest.raises(UndocumentedKey, match="ec2:ResourceTag"):
        request("ec2:DescribeTags", None, "*", {"ec2:ResourceTag/spawn:managed": "true"})
    with pytest.raises(UndocumentedKey, match="no key table"):
        request("ec2:RebootInstances", "instance", ARN, {})


def test_instance_request_carries_source_arn_only_on_the_instance() -> None:
    me = Instance("i-0abc", {"spawn:managed": "true"})
    on = instance_request("ec2:StopInstances", me, Caller(on_instance=me))
    off = instance_request("ec2:StopInstances", me, Caller())
    assert on.context["ec2:SourceInstanceARN"] == me.arn == on.resource
    assert "ec2:SourceInstanceARN" not in off.context
    assert on.context["ec2:ResourceTag/spawn:managed"] == "true"
    assert on.context["ec2:InstanceID"] == "i-0abc"


def test_tagging_request_carries_tag_keys() -> None:
    me = Instance("i-0abc")
    r = instance_request("ec2:CreateTags", me, Caller(on_instance=me), request_tags={"a": "1"})
    assert r.context["aws:TagKeys"] == ["a"] and r.context["aws:RequestTag/a"] == "1"
    assert "ec2:CreateAction" not in r.context
    with pytest.raises(UndocumentedKey, match="aws:TagKeys"):
        instance_request("ec2:StopInstances", me, Caller(), request_tags={"a": "1"})


def test_describe_request_is_on_star() -> None:
    r = region_request("ec2:DescribeTags", Caller())
    assert r.resource == "*" and set(r.context) == {"ec2:Region", "aws:RequestedRegion",
                                                    "aws:PrincipalArn"}


def test_key_table_agrees_with_parliaments_copy_of_the_reference() -> None:
    """parliament ships AWS's Service Authorization Reference data: every non-global key our
    table lists for an action is in that data (action row or the resource type's own keys)."""
    from parliament import iam_definition

    from tests.iam_requests import ACTION_KEYS

    for (action, resource_type), keys in ACTION_KEYS.items():
        prefix, name = action.split(":")
        service = next(s for s in iam_definition if s["prefix"] == prefix)
        privilege = next(p for p in service["privileges"] if p["privilege"] == name)
        known: set[str] = set()
        for row in privilege["resource_types"]:
            if row["resource_type"].rstrip("*") in ("", resource_type or ""):
                known |= {k.casefold() for k in row["condition_keys"]}
        if resource_type is not None:
            resource = next(r for r in service["resources"] if r["resource"] == resource_type)
            known |= {k.casefold() for k in resource["condition_keys"]}
        for key in keys:
            assert key.name.casefold() in known, (action, key.name)
