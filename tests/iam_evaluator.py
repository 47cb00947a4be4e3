"""A small, condition-aware IAM policy evaluator for tests: does AWS allow this one request?

Why it exists. moto evaluates actions only (an Allow with a Condition acts as an unconditional
Allow), and the IAM policy simulator is neither local nor able to resolve every policy variable.
The maintained libraries checked before writing this one don't fit either: ``principalmapper``
1.1.5 (and its fork) fails on import on Python 3.11 (``from collections import Mapping``);
``policyuniverse`` matches statements but evaluates no conditions; ``iam-ape`` expands effective
permissions but does not evaluate one request against a context; parliament lints, it does not
decide. So this module models the part of AWS's evaluation logic that the project's policies use,
and refuses (``NotModelled``) anything else rather than guess.

What it models, each point from AWS's own documentation:

* Decision for one principal's identity policies and an optional permissions boundary
  (`Policy evaluation logic`_, `Explicit and implicit denies`_): an explicit ``Deny`` in any
  policy wins; otherwise the request is allowed only when an identity statement allows it *and*,
  if a boundary is set, a boundary statement allows it too (effective permissions are the
  intersection); otherwise it is implicitly denied.
* ``Action``/``NotAction`` with ``*`` and ``?`` wildcards, case-insensitive (`Action`_).
* ``Resource``/``NotResource``: ARNs matched component by component, each of the six
  colon-separated parts on its own with ``*``/``?`` wildcards; ``*`` alone matches every resource
  (`Resource`_, and the ARN operators below).
* Condition operators (`Condition operators`_): ``StringEquals``, ``StringNotEquals``,
  ``StringEqualsIgnoreCase``, ``StringNotEqualsIgnoreCase``, ``StringLike``, ``StringNotLike``,
  ``ArnEquals``/``ArnLike`` (identical: per-component, wildcards allowed), ``ArnNotEquals``/
  ``ArnNotLike``, ``Bool``, ``Null``, the ``...IfExists`` suffix. A key absent from the request
  context makes a condition false, except for negated operators (true), ``...IfExists`` (true)
  and ``Null``.
* Several values for one key are ORed; for a negated operator they are NORed. Several keys in one
  operator, and several operators, are ANDed (`Multiple context keys or values`_).
* ``ForAllValues:`` / ``ForAnyValue:`` on multivalued keys (`Single-valued vs. multivalued`_):
  ``ForAllValues`` is true when every request value matches one policy value, **and also when the
  key is absent or empty**; ``ForAnyValue`` is false on an absent key. A plain operator on a
  request key holding several values is refused (AWS advises the set operators for those).
* Condition key names are case-insensitive (`Condition element`_); values are compared as the
  operator says.
* Policy variables ``${key}`` and ``${key, 'default'}`` in ``Resource``/``NotResource`` and in the
  values of String, ARN and Bool conditions, only in policies with ``Version`` 2012-10-17
  (`Policy variables`_). A variable naming a key missing from the context (or a multivalued key)
  makes that one comparison false (fail closed). ``${*}``, ``${?}`` and ``${$}`` stand for a literal
  ``*``, ``?`` and ``$``; a substituted value is matched literally, never as a wildcard.

Not modelled (refused with ``NotModelled``): Numeric, Date, IpAddress and Binary operators,
``Principal``/``NotPrincipal`` (identity policies have none), resource-based policies, SCPs and
session policies.

.. _Policy evaluation logic:
   https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
.. _Explicit and implicit denies: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic_AccessPolicyLanguage_Interplay.html
.. _Action: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_action.html
.. _Resource: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_resource.html
.. _Condition operators:
   https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
.. _Multiple context keys or values: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-logic-multiple-context-keys-or-values.html
.. _Single-valued vs. multivalued: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html
.. _Condition element:
   https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition.html
.. _Policy variables:
   https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_variables.html
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ContextValue = str | list[str]
Context = Mapping[str, ContextValue]

VARIABLES_VERSION = "2012-10-17"

_STRING_OPS = {
    # base operator -> (negated, kind); kind: equals | equals-ic | like | arn | bool
    "StringEquals": (False, "equals"), "StringNotEquals": (True, "equals"),
    "StringEqualsIgnoreCase": (False, "equals-ic"), "StringNotEqualsIgnoreCase": (True, "equals-ic"),
    "StringLike": (False, "like"), "StringNotLike": (True, "like"),
    "ArnEquals": (False, "arn"), "ArnLike": (False, "arn"),
    "ArnNotEquals": (True, "arn"), "ArnNotLike": (True, "arn"),
    "Bool": (False, "bool"),
}
_SET_PREFIXES = ("ForAllValues:", "ForAnyValue:")
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_DEFAULT = re.compile(r"^\s*([^,\s]+)\s*,\s*'((?:[^']|'')*)'\s*$")
_ESCAPES = {"*": "*", "?": "?", "$": "$"}


class Effect(enum.Enum):
    ALLOW = "allow"
    EXPLICIT_DENY = "explicit-deny"
    IMPLICIT_DENY = "implicit-deny"


class NotModelled(ValueError):
    """The policy uses something this evaluator does not model: it refuses instead of guessing."""


@dataclass(frozen=True)
class Decision:
    """The outcome, with the statements that produced it (Sid, or ``policyN.statementM``)."""

    effect: Effect
    allowed_by: tuple[str, ...] = ()
    denied_by: tuple[str, ...] = ()
    boundary_allowed_by: tuple[str, ...] | None = None  # None: no boundary in the evaluation

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.ALLOW

    def __str__(self) -> str:
        if self.effect is Effect.EXPLICIT_DENY:
            return f"explicit deny by {', '.join(self.denied_by)}"
        if self.effect is Effect.ALLOW:
            return f"allowed by {', '.join(self.allowed_by)}"
        if self.allowed_by and self.boundary_allowed_by == ():
            return f"implicit deny: allowed by {', '.join(self.allowed_by)} but not by the boundary"
        return "implicit deny: no statement allows it"


# A resolved value: one (character, is_wildcard) pair per character. Wildcards exist only where
# the policy text had a bare * or ?; escapes and substituted values are literal.
_Chars = list[tuple[str, bool]]


def _literal(text: str) -> _Chars:
    return [(c, False) for c in text]


def _pattern_text(text: str) -> _Chars:
    return [(c, c in "*?") for c in text]


def _lookup(context: Mapping[str, ContextValue], key: str) -> ContextValue | None:
    return context.get(key.casefold())


def _resolve(text: str, context: Mapping[str, ContextValue], *, variables: bool) -> _Chars | None:
    """The policy text with its variables substituted; None when a variable can't be resolved."""
    if not variables:
        return _pattern_text(text)
    out: _Chars = []
    pos = 0
    for match in _VARIABLE.finditer(text):
        out.extend(_pattern_text(text[pos:match.start()]))
        pos = match.end()
        inner = match.group(1)
        if inner in _ESCAPES:
            out.extend(_literal(_ESCAPES[inner]))
            continue
        default = _DEFAULT.match(inner)
        name = default.group(1) if default else inner.strip()
        value = _lookup(context, name)
        if isinstance(value, list):  # multivalued keys can't be variables
            value = value[0] if len(value) == 1 else None
        if value is None:
            if default is None:
                return None
            value = default.group(2).replace("''", "'")
        out.extend(_literal(value))
    out.extend(_pattern_text(text[pos:]))
    return out


def _glob(chars: _Chars, *, ignore_case: bool = False) -> re.Pattern[str]:
    parts = [(".*" if c == "*" else ".") if wild else re.escape(c) for c, wild in chars]
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _split_arn(chars: _Chars) -> list[_Chars]:
    parts: list[_Chars] = [[]]
    for c, wild in chars:
        if c == ":" and not wild and len(parts) < 6:
            parts.append([])
        else:
            parts[-1].append((c, wild))
    return parts


def _arn_match(pattern: _Chars, value: str) -> bool:
    """ARN matching: each of the six colon-delimited components checked on its own."""
    if pattern == [("*", True)]:
        return True
    wanted = _split_arn(pattern)
    got = value.split(":", 5)
    if len(wanted) != 6:
        raise NotModelled(f"ARN pattern {''.join(c for c, _ in pattern)!r} does not have the six "
                          "components arn:partition:service:region:account:resource")
    if len(got) != 6:
        return False
    return all(_glob(w).fullmatch(g) is not None for w, g in zip(wanted, got, strict=True))


def _compare(kind: str, pattern: _Chars, value: str) -> bool:
    text = "".join(c for c, _ in pattern)
    if kind == "equals":
        return value == text
    if kind == "equals-ic":
        return value.casefold() == text.casefold()
    if kind == "bool":
        return value.lower() == text.lower()
    if kind == "like":
        return _glob(pattern).fullmatch(value) is not None
    return _arn_match(pattern, value)


def _policy_values(raw: Any) -> list[str]:
    values = raw if isinstance(raw, list) else [raw]
    out: list[str] = []
    for v in values:
        if isinstance(v, bool):
            out.append("true" if v else "false")
        elif isinstance(v, str | int | float):
            out.append(str(v))
        else:
            raise NotModelled(f"condition value {v!r} is not a string, number or boolean")
    return out


def _condition_true(operator: str, key: str, raw: Any, context: Mapping[str, ContextValue], *,
                    variables: bool) -> bool:
    set_op = next((p for p in _SET_PREFIXES if operator.startswith(p)), None)
    base = operator[len(set_op):] if set_op else operator
    found = _lookup(context, key)
    present_values = [found] if isinstance(found, str) else list(found or [])
    present = bool(present_values)
    policy_values = _policy_values(raw)
    if base == "Null":
        if set_op:
            raise NotModelled(f"{operator}: set operators do not apply to Null")
        return any((not present) == (v.lower() == "true") for v in policy_values)
    if_exists = base.endswith("IfExists")
    if if_exists:
        base = base[: -len("IfExists")]
    if base not in _STRING_OPS:
        raise NotModelled(f"condition operator {operator}")
    negated, kind = _STRING_OPS[base]
    patterns = [_resolve(v, context, variables=variables) for v in policy_values]

    def one(value: str) -> bool:
        if negated:  # NOR over the policy values; an unresolvable value is a false comparison
            return all(p is not None and not _compare(kind, p, value) for p in patterns)
        return any(p is not None and _compare(kind, p, value) for p in patterns)

    if set_op == "ForAllValues:":
        return all(one(v) for v in present_values)  # vacuously true on an absent/empty key
    if set_op == "ForAnyValue:":
        if not present:
            return if_exists
        return any(one(v) for v in present_values)
    if not present:
        return if_exists or negated
    if len(present_values) > 1:
        raise NotModelled(f"{operator} on {key}, which holds several values in the request: use "
                          "ForAllValues: or ForAnyValue:")
    return one(present_values[0])


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _action_matches(patterns: list[str], action: str) -> bool:
    return any(_glob(_pattern_text(p), ignore_case=True).fullmatch(action) for p in patterns)


def _resource_matches(patterns: list[str], resource: str, context: Mapping[str, ContextValue], *,
                      variables: bool) -> bool:
    for p in patterns:
        resolved = _resolve(p, context, variables=variables)
        if resolved is not None and _arn_match(resolved, resource):
            return True
    return False


def _applies(stmt: dict[str, Any], action: str, resource: str,
             context: Mapping[str, ContextValue], *, variables: bool) -> bool:
    if "Principal" in stmt or "NotPrincipal" in stmt:
        raise NotModelled("Principal/NotPrincipal: resource-based policies are not modelled")
    if "Action" in stmt:
        if not _action_matches(_as_list(stmt["Action"]), action):
            return False
    elif _action_matches(_as_list(stmt["NotAction"]), action):
        return False
    if "Resource" in stmt:
        if not _resource_matches(_as_list(stmt["Resource"]), resource, context,
                                 variables=variables):
            return False
    elif "NotResource" in stmt:
        patterns = _as_list(stmt["NotResource"])
        if any(_resolve(p, context, variables=variables) is None for p in patterns):
            raise NotModelled("an unresolvable policy variable in NotResource")
        if _resource_matches(patterns, resource, context, variables=variables):
            return False
    else:
        raise NotModelled("a statement without Resource or NotResource")
    for operator, keys in (stmt.get("Condition") or {}).items():
        for key, raw in keys.items():
            if not _condition_true(operator, key, raw, context, variables=variables):
                return False
    return True


def _scan(policies: Sequence[dict[str, Any]], action: str, resource: str,
          context: Mapping[str, ContextValue], *, label: str) -> tuple[list[str], list[str]]:
    allows: list[str] = []
    denies: list[str] = []
    for p, policy in enumerate(policies):
        variables = policy.get("Version") == VARIABLES_VERSION
        stmts = policy["Statement"]
        for s, stmt in enumerate([stmts] if isinstance(stmts, dict) else stmts):
            if not _applies(stmt, action, resource, context, variables=variables):
                continue
            name = f"{label}{stmt.get('Sid') or f'policy{p}.statement{s}'}"
            if stmt["Effect"] == "Deny":
                denies.append(name)
            elif stmt["Effect"] == "Allow":
                allows.append(name)
            else:
                raise NotModelled(f"Effect {stmt['Effect']!r}")
    return allows, denies


def evaluate(policies: Sequence[dict[str, Any]], action: str, resource: str,
             context: Context, boundary: Sequence[dict[str, Any]] | None = None) -> Decision:
    """Evaluate one request (action on resource, with its request context) as AWS documents it.

    ``policies`` are the principal's identity policies (inline and managed), ``boundary`` the
    permissions boundary's documents (None: no boundary). ``resource`` is the target ARN, or
    ``"*"`` for actions without resource types.
    """
    ctx = {k.casefold(): v for k, v in context.items()}
    allows, denies = _scan(policies, action, resource, ctx, label="")
    boundary_allows: tuple[str, ...] | None = None
    if boundary is not None:
        b_allows, b_denies = _scan(boundary, action, resource, ctx, label="boundary:")
        denies += b_denies
        boundary_allows = tuple(b_allows)
    if denies:
        return Decision(Effect.EXPLICIT_DENY, tuple(allows), tuple(denies), boundary_allows)
    if allows and (boundary_allows is None or boundary_allows):
        return Decision(Effect.ALLOW, tuple(allows), (), boundary_allows)
    return Decision(Effect.IMPLICIT_DENY, tuple(allows), (), boundary_allows)
