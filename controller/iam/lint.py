"""Lint policy documents with parliament (its library API) against AWS's service data.

Findings in parliament's ERROR, MALFORMED and INVALID groups (unknown action or prefix, malformed
ARN, a condition key the action does not support, unknown operator, ...) are errors that stop a
launch; the rest (``RESOURCE_STAR``, ...) are warnings. Two findings are downgraded to warnings
on purpose, each for a stated reason:

* ``MISMATCHED_TYPE_BUT_USABLE`` and ``RESOURCE_EFFECTIVELY_STAR``: parliament's own text says the
  policy works as written.
* ``RESOURCE_MISMATCH`` when every mismatched action comes from a wildcard (``s3:*`` on a bucket
  ARN also names access-point actions that simply do not apply); a mismatch for an action the
  policy names literally stays an error.
* ``UNKNOWN_CONDITION_FOR_ACTION`` for ``aws:ARN`` compared with ``${ec2:SourceInstanceARN}``: the
  self-scoping pattern of the agent's policy (see ``controller.iam.agent_policy``); AWS evaluates
  it although the Service Authorization Reference does not list ``aws:ARN``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ERROR_GROUPS = frozenset({"ERROR", "MALFORMED", "INVALID"})
WARNING_ISSUES = frozenset({"MISMATCHED_TYPE_BUT_USABLE", "RESOURCE_EFFECTIVELY_STAR"})
SELF_SCOPE_ISSUE = ("UNKNOWN_CONDITION_FOR_ACTION", "Unknown condition aws:ARN for action ec2:")


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


def _config() -> dict[str, Any]:
    config: dict[str, Any] = _parliament().config
    return config


def _only_wildcard_mismatch(raw: Any, text: str) -> bool:
    """RESOURCE_MISMATCH whose actions all come from wildcard expansion (none named literally)."""
    if not isinstance(raw, list) or not raw:
        return False
    lowered = text.lower()
    names = [str(item.get("action", "")) for item in raw if isinstance(item, dict)]
    return bool(names) and all(f'"{n.lower()}"' not in lowered for n in names)


def _is_error(issue: str, detail: str, raw: Any = None, text: str = "") -> bool:
    if issue in WARNING_ISSUES:
        return False
    if issue == "RESOURCE_MISMATCH" and _only_wildcard_mismatch(raw, text):
        return False
    if issue == SELF_SCOPE_ISSUE[0] and detail.startswith(SELF_SCOPE_ISSUE[1]):
        return False
    group = str(_config().get(issue, {}).get("group", "ERROR"))
    return group in ERROR_GROUPS


def _detail_text(detail: Any) -> str:
    if isinstance(detail, str):
        return detail
    return json.dumps(detail, default=str, sort_keys=True)


def lint_text(text: str, *, source: str = "policy") -> LintReport:
    """Lint a policy's JSON text (line/column in findings refer to this text)."""
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
            error=_is_error(str(finding.issue), detail, finding.detail, text)))
    return report


def lint_document(document: dict[str, Any], *, source: str = "policy") -> LintReport:
    return lint_text(json.dumps(document, indent=2), source=source)
