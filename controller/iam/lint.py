"""Lint policy documents with parliament (its library API) against AWS's service data.

Findings in parliament's ERROR, MALFORMED and INVALID groups (unknown action or prefix, malformed
ARN, a condition key the action does not support (``UNKNOWN_CONDITION_FOR_ACTION``), unknown
operator, ...) are errors that stop a launch; the rest (``RESOURCE_STAR``, ...) are warnings.
Downgraded to warnings on purpose, each for a stated reason:

* ``MISMATCHED_TYPE_BUT_USABLE`` and ``RESOURCE_EFFECTIVELY_STAR``: parliament's own text says the
  policy works as written.
* ``RESOURCE_MISMATCH`` when every mismatched action comes from a wildcard (``s3:*`` on a bucket
  ARN also names access-point actions that simply do not apply); a mismatch for an action the
  policy names literally stays an error.
* ``RESOURCE_MISMATCH`` when every resource type the statement lacks for an action is named by
  another Allow statement of the same policy for that action. parliament checks each statement
  alone, but AWS's own examples split one action across statements so that a condition applies
  to some of its resources only: RunInstances on ``instance/*`` and ``volume/*`` with
  ``aws:RequestTag``, and on image, subnet, network interface, security group and key pair
  without it (EC2 User Guide, "Example policies to control access the Amazon EC2 API", section
  "Launch instances (RunInstances)",
  https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ExamplePolicies_EC2.html#iam-example-runinstances).
  AWS evaluates every statement for every resource of the request, so the split is complete.

No ``UNKNOWN_CONDITION_FOR_ACTION`` is ever downgraded. Instead, ``DOCUMENTED_GLOBAL_KEYS`` lists
the exact condition keys that AWS documents as *global* (usable with every action) and that
parliament's own global-key table (``parliament.statement.GLOBAL_CONDITION_KEYS``) lacks, each with
its type and the AWS reference. They are added to that table for the duration of one analysis,
so parliament treats them like the global keys it knows (and still type-checks their values);
any other unknown key, ``aws:ARN`` on an EC2 action or a typo, stays an error. The finding's
detail is only a message string (parliament 1.6.4), so nothing is matched on its text.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

ERROR_GROUPS = frozenset({"ERROR", "MALFORMED", "INVALID"})
WARNING_ISSUES = frozenset({"MISMATCHED_TYPE_BUT_USABLE", "RESOURCE_EFFECTIVELY_STAR"})


@dataclass(frozen=True)
class GlobalKey:
    """A condition key AWS documents as global; ``kind`` is parliament's type name."""

    kind: str
    reference: str


DOCUMENTED_GLOBAL_KEYS: dict[str, GlobalKey] = {
    # EC2 User Guide, "Condition keys for Amazon EC2": "ec2:SourceInstanceARN ... This is an AWS
    # global condition key, which means that you can use it with services other than Amazon EC2";
    # AWS confirmed it in awsdocs/iam-user-guide#160. Its values are ARNs (list_amazonec2: ARN).
    "ec2:SourceInstanceARN": GlobalKey(
        "Arn",
        "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/iam-policies-for-amazon-ec2.html"
        "#amazon-ec2-keys ; https://github.com/awsdocs/iam-user-guide/issues/160"),
}


@dataclass(frozen=True)
class Finding:
    issue: str
    severity: str
    detail: str
    line: int | None
    column: int | None
    error: bool

    def text(self, source: str) -> str:
        where = f"{source}:{self.line}:{self.column}" if self.line else source
        return f"{where}: {self.issue}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return {"issue": self.issue, "severity": self.severity, "detail": self.detail,
                "line": self.line, "column": self.column,
                "level": "error" if self.error else "warning"}


@dataclass
class LintReport:
    source: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.error]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if not f.error]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "ok": not self.errors,
                "errors": [f.to_dict() for f in self.errors],
                "warnings": [f.to_dict() for f in self.warnings]}


def _parliament() -> Any:
    try:
        import parliament
    except ImportError:
        from spored.errors import UsageError

        raise UsageError("policy files are linted with parliament, which is not installed",
                         hint="pip install 'spawn-spored[lint]' (or pip install parliament)") from None
    return parliament


def lint_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("parliament") is not None


def _config() -> dict[str, Any]:
    config: dict[str, Any] = _parliament().config
    return config


@contextlib.contextmanager
def documented_global_keys() -> Iterator[None]:
    """parliament's global-key table plus ``DOCUMENTED_GLOBAL_KEYS``, restored afterwards."""
    _parliament()
    from parliament import statement

    table: dict[str, str] = statement.GLOBAL_CONDITION_KEYS
    added = {k: g.kind for k, g in DOCUMENTED_GLOBAL_KEYS.items() if k not in table}
    table.update(added)
    try:
        yield
    finally:
        for key in added:
            table.pop(key, None)


def _only_wildcard_mismatch(raw: Any, text: str) -> bool:
    """RESOURCE_MISMATCH whose actions all come from wildcard expansion (none named literally)."""
    if not isinstance(raw, list) or not raw:
        return False
    lowered = text.lower()
    names = [str(item.get("action", "")) for item in raw if isinstance(item, dict)]
    return bool(names) and all(f'"{n.lower()}"' not in lowered for n in names)


def _covered_by_other_statements(raw: Any, text: str) -> bool:
    """RESOURCE_MISMATCH whose every missing (action, resource format) another Allow names."""
    if not isinstance(raw, list) or not raw:
        return False
    try:
        policy = json.loads(text)
    except ValueError:
        return False
    stmts = policy.get("Statement", []) if isinstance(policy, dict) else []
    stmts = [stmts] if isinstance(stmts, dict) else stmts

    def listed(value: Any) -> list[str]:
        return [value] if isinstance(value, str) else [str(v) for v in value or []]

    def covered(action: str, required: str) -> bool:
        return any(stmt.get("Effect") == "Allow"
                   and any(fnmatch.fnmatchcase(action.lower(), a.lower())
                           for a in listed(stmt.get("Action")))
                   and any(r == "*" or fnmatch.fnmatchcase(r, required)
                           for r in listed(stmt.get("Resource")))
                   for stmt in stmts if isinstance(stmt, dict))

    return all(isinstance(item, dict) and covered(str(item.get("action", "")),
                                                  str(item.get("required_format", "")))
               for item in raw)


def _is_error(issue: str, raw: Any = None, text: str = "") -> bool:
    if issue in WARNING_ISSUES:
        return False
    if issue == "RESOURCE_MISMATCH" and (_only_wildcard_mismatch(raw, text)
                                         or _covered_by_other_statements(raw, text)):
        return False
    group = str(_config().get(issue, {}).get("group", "ERROR"))
    return group in ERROR_GROUPS


def _detail_text(detail: Any) -> str:
    if isinstance(detail, str):
        return detail
    return json.dumps(detail, default=str, sort_keys=True)


def lint_text(text: str, *, source: str = "policy") -> LintReport:
    """Lint a policy's JSON text (line/column in findings refer to this text)."""
    with documented_global_keys():
        policy = _parliament().analyze_policy_string(text, filepath=None,
                                                     include_community_auditors=False)
    report = LintReport(source)
    for finding in policy.findings:
        location = finding.location or {}
        detail = _detail_text(finding.detail)
        severity = str(_config().get(finding.issue, {}).get("severity", "")) or "UNKNOWN"
        report.findings.append(Finding(
            issue=str(finding.issue), severity=severity, detail=detail,
            line=location.get("line"), column=location.get("column"),
            error=_is_error(str(finding.issue), finding.detail, text)))
    return report


def lint_document(document: dict[str, Any], *, source: str = "policy") -> LintReport:
    return lint_text(json.dumps(document, indent=2), source=source)


# ---- the whole composed role (spawn launch) ----

AWS_MANAGED_MARK = ":iam::aws:policy/"

# Which flag each inline policy of a composed role comes from (for the error's field).
_INLINE_FIELDS = {"spawn-agent": "spawn iam agent-policy", "spawn-templates": "--iam-policy",
                  "spawn-custom": "--iam-policy-file"}


def lint_role(inline: dict[str, dict[str, Any]], managed: dict[str, dict[str, Any]] | None = None,
              *, boundary: str | None = None, skip_warnings_of: tuple[str, ...] = ()) -> list[str]:
    """Lint every document of a composed role before anything is created.

    ``inline``: inline policy name -> document (the agent's, the templates', the user's file);
    ``managed``: policy ARN -> default version document, for the attached managed policies and the
    permissions boundary (``boundary`` names which one that is) that could be read. An error in
    any document spawn or the user wrote raises ``ValidationError`` (exit 2), naming the flag. AWS
    managed policies are AWS's to fix: their findings are returned as warnings. Returns warnings;
    ``skip_warnings_of`` names inline policies whose warnings were already reported.
    """
    from spored.errors import ValidationError

    warnings: list[str] = []
    for name, document in inline.items():
        report = lint_document(document, source=f"inline policy {name}")
        if report.errors:
            lines = "; ".join(f.text(name) for f in report.errors)
            raise ValidationError(_INLINE_FIELDS.get(name, name),
                                  f"the role's inline policy {name} has {len(report.errors)} lint "
                                  f"error(s): {lines}")
        if name not in skip_warnings_of:
            warnings.extend(f"{name}: {f.issue}: {f.detail}" for f in report.warnings)
    for arn, document in (managed or {}).items():
        field_name = ("--iam-permissions-boundary" if arn == boundary
                      else "--iam-managed-policies")
        report = lint_document(document, source=arn)
        if report.errors and AWS_MANAGED_MARK not in arn:
            lines = "; ".join(f.text(arn) for f in report.errors)
            raise ValidationError(field_name, f"{arn} has {len(report.errors)} lint error(s): "
                                              f"{lines}",
                                  hint="fix the policy; `spawn iam lint FILE` on its JSON shows "
                                       "every finding")
        for f in report.findings:
            if f.error:  # an AWS managed policy: parliament's data may simply lag behind AWS
                warnings.append(f"{arn} (AWS managed): parliament reports {f.issue}: {f.detail}")
    return warnings
