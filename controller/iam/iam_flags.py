"""The launch flags for IAM and their validation into an IamRequest (no AWS)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from spored.errors import ValidationError

from . import document as doclib
from .compose import (
    POLICY_ARN_FORM,
    IamRequest,
    plan,
    validate_policy_arn,
    validate_role_name,
)
from .templates import FORM, SCOPE_FORMS, TEMPLATES, TemplateRef, parse_list

MAX_POLICY_FILE_BYTES = 128 * 1024  # far above any policy IAM accepts; stops reading huge files


def _policy_help() -> str:
    scopes = "; ".join(f"{svc}: {form}" for svc, form in SCOPE_FORMS.items())
    return (f"{FORM}. Templates: {', '.join(TEMPLATES)}. Without @SCOPE a template applies to every "
            f"resource (\"*\"). Scopes (region/account become * in ARNs): {scopes}")


def add_iam_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the IAM flags of `spawn launch`."""
    group = parser.add_argument_group(
        "IAM", "The instance role always includes the agent's own permissions "
               "(`spawn iam agent-policy`); these flags add to it.")
    group.add_argument("--iam-policy", metavar="LIST", help=_policy_help())
    group.add_argument("--iam-policy-file", metavar="PATH",
                       help="an IAM policy document (JSON) to add as an inline policy; checked "
                            "for syntax, IAM grammar and with parliament before anything is created")
    group.add_argument("--iam-managed-policies", metavar="ARN[,ARN]",
                       help=f"managed policies to attach (at most 10): {POLICY_ARN_FORM}")
    group.add_argument("--iam-role", metavar="NAME",
                       help="use (or create) this role instead of a content-addressed spawn-<hash> "
                            "role; with policy flags it is brought in line with them")
    group.add_argument("--iam-permissions-boundary", metavar="ARN",
                       help=f"permissions boundary for the role: {POLICY_ARN_FORM}")
    group.add_argument("--force", action="store_true",
                       help="proceed with an existing --iam-role that lacks the agent's permissions "
                            "(the instance will NOT be able to end itself)")


def read_policy_file(path: str, *, field: str = "--iam-policy-file") -> tuple[dict[str, Any], str]:
    """Read, parse and grammar-check a policy file; returns (document, text)."""
    try:
        size = os.path.getsize(path)
        if size > MAX_POLICY_FILE_BYTES:
            raise ValidationError(field, f"{path}: {size} bytes is far over IAM's policy size "
                                         "limit (10,240 characters per role)")
        with open(path, encoding="utf-8-sig") as fh:  # tolerate a BOM from Windows editors
            text = fh.read()
    except FileNotFoundError:
        raise ValidationError(field, f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValidationError(field, f"{path}: is a directory, not a policy file") from None
    except UnicodeDecodeError as exc:
        raise ValidationError(field, f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ValidationError(field, f"{path}: cannot read: {exc.strerror}") from None
    data = doclib.parse_json(text, source=path, field=field)
    return doclib.validate(data, source=path, field=field), text


def load_checked_policy(path: str, *, field: str = "--iam-policy-file") -> tuple[dict[str, Any],
                                                                                 list[str]]:
    """Parse, grammar-check and lint a policy file. Lint errors raise; warnings are returned."""
    from .lint import lint_text

    document, text = read_policy_file(path, field=field)
    report = lint_text(text, source=path)
    if report.errors:
        lines = "; ".join(f.text(path) for f in report.errors)
        raise ValidationError(field, f"{path}: parliament found {len(report.errors)} error(s): "
                                     f"{lines}",
                              hint="fix the policy; `spawn iam lint FILE` shows every finding")
    return document, [f"{path}: {w.issue}: {w.detail}" for w in report.warnings]


def _split_arns(value: str, *, field: str) -> tuple[str, ...]:
    parts = [p for p in value.split(",")]
    if not value.strip() or any(not p.strip() for p in parts):
        raise ValidationError(field, f"empty ARN in {value!r}; accepted: ARN[,ARN] with {POLICY_ARN_FORM}")
    return tuple(validate_policy_arn(p, field=field) for p in parts)


def request_from_args(args: argparse.Namespace) -> IamRequest:
    """Validate the IAM flags into a request; raises ValidationError (exit 2). No AWS."""
    templates: tuple[TemplateRef, ...] = ()
    if getattr(args, "iam_policy", None) is not None:
        templates = parse_list(args.iam_policy)
    managed: tuple[str, ...] = ()
    if getattr(args, "iam_managed_policies", None) is not None:
        managed = _split_arns(args.iam_managed_policies, field="--iam-managed-policies")
    boundary = None
    if getattr(args, "iam_permissions_boundary", None) is not None:
        boundary = validate_policy_arn(args.iam_permissions_boundary,
                                       field="--iam-permissions-boundary")
    role = None
    if getattr(args, "iam_role", None) is not None:
        role = validate_role_name(args.iam_role)
    custom = None
    warnings: list[str] = []
    path = getattr(args, "iam_policy_file", None)
    if path is not None:
        custom, warnings = load_checked_policy(path)
    request = IamRequest(
        templates=templates, policy_file=path, custom_document=custom,
        managed_policy_arns=managed, role_name=role, permissions_boundary=boundary,
        force=bool(getattr(args, "force", False)), lint_warnings=tuple(warnings))
    plan(request)  # limits (size, managed count) fail here, before any AWS call
    return request
