"""IAM policy documents: parse JSON with positions, check the IAM grammar, match actions (pure).

The grammar check covers what AWS rejects with MalformedPolicyDocument for identity policies:
Version, Statement as an object or a list, Effect, exactly one of Action/NotAction and of
Resource/NotResource, no Principal, and condition operators AWS knows. Semantic checks against
AWS's service data (unknown actions, ARNs, condition keys per action) are parliament's job
(``controller.iam.lint``).
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from spored.errors import ValidationError

VERSIONS = ("2012-10-17", "2008-10-17")
_TOP_KEYS = {"Version", "Statement", "Id"}
_STATEMENT_KEYS = {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition",
                   "Principal", "NotPrincipal"}
_ACTION_RE = re.compile(r"^(\*|[a-zA-Z0-9-]+:[a-zA-Z0-9*?]+)$")
_SID_RE = re.compile(r"^[A-Za-z0-9]*$")

CONDITION_OPERATORS = frozenset({
    "StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase",
    "StringLike", "StringNotLike",
    "NumericEquals", "NumericNotEquals", "NumericLessThan", "NumericLessThanEquals",
    "NumericGreaterThan", "NumericGreaterThanEquals",
    "DateEquals", "DateNotEquals", "DateLessThan", "DateLessThanEquals", "DateGreaterThan",
    "DateGreaterThanEquals",
    "Bool", "BinaryEquals", "IpAddress", "NotIpAddress",
    "ArnEquals", "ArnLike", "ArnNotEquals", "ArnNotLike",
})


def parse_json(text: str, *, source: str, field: str) -> Any:
    """json.loads with a message naming the source, line and column of a syntax error."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(field, f"{source}: invalid JSON at line {exc.lineno}, column "
                                     f"{exc.colno}: {exc.msg}") from None


def known_operator(operator: str) -> bool:
    base = operator
    for prefix in ("ForAllValues:", "ForAnyValue:"):
        if base.startswith(prefix):
            base = base[len(prefix):]
            break
    if base == "Null":
        return operator == "Null"
    if base.endswith("IfExists"):
        base = base[: -len("IfExists")]
    return base in CONDITION_OPERATORS


def _strings(value: Any, *, where: str, field: str, element: str) -> list[str]:
    if isinstance(value, str):
        values = [value]
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        values = list(value)
    else:
        raise ValidationError(field, f"{where}: {element} must be a string or a non-empty list of "
                                     f"strings, got {json.dumps(value)[:80]}")
    return values


def validate(document: Any, *, source: str, field: str) -> dict[str, Any]:
    """Check the IAM grammar of an identity policy; return it normalised (Statement as a list)."""
    if not isinstance(document, dict):
        raise ValidationError(field, f"{source}: a policy document is a JSON object with Version "
                                     "and Statement")
    unknown = set(document) - _TOP_KEYS
    if unknown:
        raise ValidationError(field, f"{source}: unknown top-level element(s) {sorted(unknown)}; "
                                     "accepted: Version, Statement, Id")
    version = document.get("Version")
    if version not in VERSIONS:
        raise ValidationError(field, f"{source}: Version must be \"2012-10-17\" (or the legacy "
                                     f"\"2008-10-17\"), got {json.dumps(version)}")
    raw = document.get("Statement")
    if isinstance(raw, dict):
        statements = [raw]
    elif isinstance(raw, list) and raw:
        statements = raw
    else:
        raise ValidationError(field, f"{source}: Statement must be an object or a non-empty list "
                                     "of objects")
    sids: set[str] = set()
    for index, stmt in enumerate(statements):
        where = f"{source}: Statement[{index}]"
        _validate_statement(stmt, where=where, field=field)
        sid = stmt.get("Sid")
        if sid is not None:
            if sid in sids:
                raise ValidationError(field, f"{where}: duplicate Sid {sid!r}")
            sids.add(sid)
    out = dict(document)
    out["Statement"] = statements
    return out


def _validate_statement(stmt: Any, *, where: str, field: str) -> None:
    if not isinstance(stmt, dict):
        raise ValidationError(field, f"{where}: a statement is a JSON object")
    unknown = set(stmt) - _STATEMENT_KEYS
    if unknown:
        raise ValidationError(field, f"{where}: unknown element(s) {sorted(unknown)}; accepted: "
                                     f"{', '.join(sorted(_STATEMENT_KEYS - {'Principal', 'NotPrincipal'}))}")
    if "Principal" in stmt or "NotPrincipal" in stmt:
        raise ValidationError(field, f"{where}: Principal/NotPrincipal belong in resource or trust "
                                     "policies, not in a role's permissions policy")
    sid = stmt.get("Sid")
    if sid is not None and (not isinstance(sid, str) or not _SID_RE.match(sid)):
        raise ValidationError(field, f"{where}: Sid must contain only letters and digits, "
                                     f"got {json.dumps(sid)}")
    if stmt.get("Effect") not in ("Allow", "Deny"):
        raise ValidationError(field, f"{where}: Effect must be \"Allow\" or \"Deny\", "
                                     f"got {json.dumps(stmt.get('Effect'))}")
    for a, b in (("Action", "NotAction"), ("Resource", "NotResource")):
        present = [k for k in (a, b) if k in stmt]
        if len(present) != 1:
            raise ValidationError(field, f"{where}: needs exactly one of {a} or {b}")
        values = _strings(stmt[present[0]], where=where, field=field, element=present[0])
        if a == "Action":
            for action in values:
                if not _ACTION_RE.match(action):
                    raise ValidationError(field, f"{where}: {action!r} is not an action; accepted: "
                                                 "\"service:ActionName\" (wildcards * and ?) or \"*\"")
        else:
            for resource in values:
                if resource != "*" and not resource.startswith("arn:"):
                    raise ValidationError(field, f"{where}: resource {resource!r} must be an ARN "
                                                 "(arn:partition:service:region:account:resource) "
                                                 "or \"*\"")
    if "Condition" in stmt:
        _validate_condition(stmt["Condition"], where=where, field=field)


def _validate_condition(condition: Any, *, where: str, field: str) -> None:
    if not isinstance(condition, dict) or not condition:
        raise ValidationError(field, f"{where}: Condition must be an object of "
                                     "{operator: {key: value(s)}}")
    for operator, block in condition.items():
        if not known_operator(operator):
            raise ValidationError(field, f"{where}: unknown condition operator {operator!r}; "
                                         "accepted: String*, Numeric*, Date*, Bool, BinaryEquals, "
                                         "IpAddress, NotIpAddress, Arn*, Null, with optional "
                                         "ForAllValues:/ForAnyValue: prefix and IfExists suffix")
        if not isinstance(block, dict) or not block:
            raise ValidationError(field, f"{where}: Condition {operator} must map condition keys "
                                         "to values")
        for key, value in block.items():
            ok_scalar = isinstance(value, str | bool | int | float)
            ok_list = isinstance(value, list) and value and all(
                isinstance(v, str | bool | int | float) for v in value)
            if not (ok_scalar or ok_list):
                raise ValidationError(field, f"{where}: Condition {operator} {key}: value must be a "
                                             "string, number, boolean or a list of them")


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    raw = document.get("Statement", [])
    return [raw] if isinstance(raw, dict) else list(raw)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def action_matches(pattern: str, action: str) -> bool:
    """IAM action matching: case-insensitive, ``*`` and ``?`` wildcards."""
    return fnmatch.fnmatchcase(action.lower(), pattern.lower())


def statement_covers(stmt: dict[str, Any], action: str) -> bool:
    if "Action" in stmt:
        return any(action_matches(p, action) for p in _as_list(stmt["Action"]))
    return not any(action_matches(p, action) for p in _as_list(stmt.get("NotAction")))


def allows(documents: Iterable[dict[str, Any]], action: str, *,
           ignore_conditions: bool = True) -> bool:
    """Whether some Allow statement covers ``action`` and no unconditional Deny does.

    Resources are not evaluated and conditions are assumed satisfiable (``ignore_conditions``):
    this answers "is the action granted at all", which is what a missing permission looks like.
    A conditional Deny is not counted, because it does not deny in every request.
    """
    docs = list(documents)
    for doc in docs:
        for stmt in statements(doc):
            if stmt.get("Effect") == "Deny" and "Condition" not in stmt \
                    and statement_covers(stmt, action):
                return False
    return any(stmt.get("Effect") == "Allow" and statement_covers(stmt, action)
               and (ignore_conditions or "Condition" not in stmt)
               for doc in docs for stmt in statements(doc))


def iter_actions(document: dict[str, Any]) -> Iterator[str]:
    for stmt in statements(document):
        yield from _as_list(stmt.get("Action"))


def compact_size(document: dict[str, Any]) -> int:
    """Characters IAM counts toward its size quotas: the JSON with whitespace removed."""
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    return len(re.sub(r"\s", "", text))


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
