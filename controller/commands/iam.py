"""`spawn iam`: templates, show, agent-policy, lint, cli-policy, setup, roles, cleanup."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from controller.output import Output, add_json_flag
from spored.errors import ExitStatus, ValidationError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("iam", help="IAM templates, policies, roles",
                                   description="Inspect spawn's IAM templates and policies, lint "
                                               "policy files, list and clean up spawn's roles.")
    sub = parser.add_subparsers(dest="iam_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("templates", help="list the policy templates for --iam-policy")
    add_json_flag(p)
    p.set_defaults(func=cmd_templates)

    p = sub.add_parser("show", help="print the policy document a template contributes")
    p.add_argument("name", help="a template, optionally scoped, e.g. s3:ReadOnly@my-bucket/data/*")
    add_json_flag(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("agent-policy", help="print the agent's (spored's) own policy")
    add_json_flag(p)
    p.set_defaults(func=cmd_agent_policy)

    p = sub.add_parser("lint", help="check a policy file: JSON, IAM grammar, parliament")
    p.add_argument("file", help="policy document (JSON)")
    add_json_flag(p)
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser("cli-policy", help="print the policy the spawn CLI user needs")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--full", action="store_const", const="full", dest="kind",
                      help="the broad policy (ec2:*, s3:*, ...) of the reference, plus spawn's needs")
    kind.add_argument("--scoped", action="store_const", const="scoped", dest="kind",
                      help="least privilege: roles only with spawn's permissions boundary (run "
                           "`spawn iam setup` once per account first), EC2 writes only on "
                           "spawn:managed resources, S3 only spawn's bundle buckets")
    add_json_flag(p)
    p.set_defaults(func=cmd_cli_policy, kind="minimal")

    p = sub.add_parser("setup", help="create or update spawn's permissions boundary "
                                     "(administrator, once per account)",
                       description="Create the customer managed policy "
                                   "policy/spawn/spawn-boundary, or bring it up to date. Needs IAM "
                                   "administrator rights; run once per account before anyone "
                                   "uses `spawn iam cli-policy --scoped`. Idempotent.")
    p.add_argument("--dry-run", action="store_true", help="only show what would be done")
    add_json_flag(p)
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("roles", help="roles spawn created and the instances using them")
    p.add_argument("--region", action="append", metavar="REGION",
                   help="only look for instances in this region (repeatable; default: every "
                        "enabled region)")
    add_json_flag(p)
    p.set_defaults(func=cmd_roles)

    p = sub.add_parser("cleanup", help="delete spawn roles and profiles no instance uses "
                                       "(dry run unless --yes)")
    p.add_argument("--region", action="append", metavar="REGION",
                   help="only look for instances in this region (repeatable; default: every "
                        "enabled region - a role used elsewhere would look unused)")
    p.add_argument("--yes", action="store_true", help="really delete")
    p.add_argument("--include-named", action="store_true",
                   help="also delete unused roles created for --iam-role NAME")
    add_json_flag(p)
    p.set_defaults(func=cmd_cleanup)


def _print_json(doc: Any) -> Any:
    def render(stream: TextIO) -> None:
        stream.write(json.dumps(doc, indent=2) + "\n")
    return render


def cmd_templates(args: argparse.Namespace, out: Output) -> int:
    from controller.iam.templates import describe

    rows = describe()
    if out.json:
        out.result({"templates": rows})
    else:
        out.table(["template", "actions", "scope (@SCOPE)"],
                  [[r["name"], " ".join(r["actions"]), r["scope"]] for r in rows])
        for r in rows:
            if r["note"]:
                out.stdout.write(f"note: {r['name']}: {r['note']}\n")
    return ExitStatus.OK


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    from controller.iam.templates import document, parse_ref

    ref = parse_ref(args.name, field="NAME")
    out.result(document(ref), _print_json(document(ref)))
    return ExitStatus.OK


def cmd_agent_policy(args: argparse.Namespace, out: Output) -> int:
    from controller.iam.agent_policy import agent_policy_document

    doc = agent_policy_document()
    out.result(doc, _print_json(doc))
    return ExitStatus.OK


def cmd_lint(args: argparse.Namespace, out: Output) -> int:
    from controller.iam.compose import IamRequest, plan
    from controller.iam.iam_flags import read_policy_file
    from controller.iam.lint import lint_text

    document, text = read_policy_file(args.file, field="FILE")
    plan(IamRequest(custom_document=document, policy_file=args.file))  # role size limit
    report = lint_text(text, source=args.file)

    def human(stream: TextIO) -> None:
        for f in report.findings:
            level = "error" if f.error else "warning"
            stream.write(f"{level}: {f.text(args.file)}\n")
        stream.write(f"{args.file}: {len(report.errors)} error(s), "
                     f"{len(report.warnings)} warning(s)\n")

    if report.errors and not out.json:
        human(out.stdout)
        raise ValidationError("FILE", f"{args.file}: parliament found {len(report.errors)} "
                                      f"error(s): {report.errors[0].text(args.file)}")
    if report.errors:
        out.result(report.to_dict())
        return ExitStatus.USAGE
    out.result(report.to_dict(), human)
    return ExitStatus.OK


def cmd_cli_policy(args: argparse.Namespace, out: Output) -> int:
    from controller.iam.cli_policy import policy

    doc = policy(args.kind)
    out.result(doc, _print_json(doc))
    return ExitStatus.OK


def cmd_setup(args: argparse.Namespace, out: Output) -> int:
    from controller.iam.setup import setup_boundary

    result = setup_boundary(dry_run=args.dry_run)

    def human(stream: TextIO) -> None:
        for step in result.steps:
            stream.write(f"{step}\n")
        if result.dry_run:
            stream.write("dry run: nothing was changed\n")
        else:
            stream.write(f"spawn's permissions boundary: {result.arn} ({result.state})\n")

    out.result(result.to_dict(), human)
    return ExitStatus.OK


def cmd_roles(args: argparse.Namespace, out: Output) -> int:
    from controller.iam.inventory import list_roles

    roles = list_roles(args.region)
    if out.json:
        out.result({"roles": [r.to_dict() for r in roles]})
        return ExitStatus.OK
    out.table(["role", "kind", "profiles", "instances"],
              [[r.name, r.kind, " ".join(p["name"] for p in r.profiles),
                " ".join(r.instances) or "-"] for r in roles], title="spawn roles (/spawn/)")
    return ExitStatus.OK


def cmd_cleanup(args: argparse.Namespace, out: Output) -> int:
    from controller.iam.inventory import cleanup, cleanup_plan

    plan = cleanup_plan(args.region, include_named=args.include_named)
    result: dict[str, Any] = {"dry_run": not args.yes, **plan.to_dict(), "done": []}
    if args.yes:
        result["done"] = cleanup(plan)

    def human(stream: TextIO) -> None:
        verb = "deleted" if args.yes else "would delete"
        for role in plan.roles:
            stream.write(f"{verb} role {role.name} and its profile(s) "
                         f"{', '.join(p['name'] for p in role.profiles) or '-'}\n")
        for name in plan.empty_profiles:
            stream.write(f"{verb} empty instance profile {name}\n")
        for role in plan.kept:
            reason = f"used by {', '.join(role.instances)}" if role.in_use else "named role"
            stream.write(f"kept role {role.name}: {reason}\n")
        if not plan.roles and not plan.empty_profiles:
            stream.write("nothing to clean up\n")
        elif not args.yes:
            stream.write("dry run: pass --yes to delete\n")

    out.result(result, human)
    return ExitStatus.OK
