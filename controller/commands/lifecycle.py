"""Lifecycle commands: list, status, extend, terminate, stop, start, hibernate, config, connect.

All act through the EC2 API and tags, only on instances tagged spawn:managed=true. The work is
in ``controller.lifecycle`` (imported when a command runs, so `spawn --help` stays fast).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from controller.output import Output, add_json_flag
from spored.errors import ExitStatus, UsageError


def _regions_arg(parser: argparse.ArgumentParser, *, many: bool) -> None:
    parser.add_argument("--region", action="append", default=[],
                        help="region to search (repeatable or comma-separated)" if many else
                        "region to search (default: all enabled regions, concurrently)")
    if many:
        parser.add_argument("--all-regions", action="store_true",
                            help="every enabled region, queried concurrently")


def _find(args: argparse.Namespace, refs: list[str]) -> list[Any]:
    from controller.lifecycle import find

    find.validate_refs(refs)
    regions = find.validate_regions(args.region) if args.region else find.enabled_regions()
    return find.find(refs, regions)


def _one(args: argparse.Namespace) -> Any:
    return _find(args, [args.instance])[0]


# --- list -------------------------------------------------------------------------------
def _list(args: argparse.Namespace, out: Output) -> int:
    from controller.lifecycle import find
    from controller.lifecycle import list as listing
    from controller.lifecycle.view import LIST_COLUMNS

    states = listing.validate_states(args.state)
    regions = find.regions_for(args.region, args.all_regions)
    rows, failures = listing.collect(regions, states)
    for region, message in sorted(failures.items()):
        out.warn(f"region {region} could not be listed: {message}")
    if out.json:
        out.result({"instances": rows, "regions": regions, "failed_regions": failures})
    elif rows:
        out.table([c.replace("_", " ") for c in LIST_COLUMNS], [[r[c] for c in LIST_COLUMNS] for r in rows])
    else:
        where = ", ".join(regions) if len(regions) < 5 else f"{len(regions)} regions"
        out.info(f"no spawn-managed instances in {where}")
    return ExitStatus.AWS if failures else ExitStatus.OK


# --- status -----------------------------------------------------------------------------
def _status(args: argparse.Namespace, out: Output) -> int:
    from controller import aws
    from controller.lifecycle.connect import console_output
    from controller.lifecycle.status import STATUS_FIELDS, status

    found = _one(args)
    # The console carries the agent's permission status even when its CreateTags is denied (EC2
    # keeps the last console output of a stopped instance too).
    console = console_output(aws.client("ec2", found.region), found.instance_id) \
        if found.state != "pending" else None
    result = status(found, console=console)

    def human(stream: TextIO) -> None:
        for key in STATUS_FIELDS:
            if result.get(key) not in (None, ""):
                stream.write(f"{key.replace('_', ' '):>22}: {result[key]}\n")
        for key, value in result["lifecycle_tags"].items():
            stream.write(f"{key:>22}: {value}\n")

    out.result(result, human)
    return 0


# --- extend -----------------------------------------------------------------------------
def _extend(args: argparse.Namespace, out: Output) -> int:
    from controller.lifecycle.extend import extend, parse_extension

    parse_extension(args.duration)  # bad input before any AWS call
    result = extend(_one(args), args.duration)

    def human(stream: TextIO) -> None:
        if result["paused"]:
            stream.write(f"{result['instance_id']}: paused TTL {result['previous_remaining']} -> "
                         f"{result['ttl_remaining']} (re-armed by spawn start)\n")
        else:
            stream.write(f"{result['instance_id']}: deadline {result['previous_deadline'] or 'none'} -> "
                         f"{result['deadline']} (in {result['time_left']})\n")
            if result.get("warning"):
                stream.write(f"warning: {result['warning']}\n")

    out.result(result, human)
    return 0


# --- terminate / stop / start / hibernate ----------------------------------------------
def _confirm(question: str, *, assume_yes: bool, stdin: TextIO | None = None) -> None:
    stream = stdin or sys.stdin
    if assume_yes:
        return
    if not stream.isatty():
        raise UsageError(f"{question} needs confirmation: pass --yes (no terminal to ask on)")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    if stream.readline().strip().lower() not in ("y", "yes"):
        raise UsageError("not confirmed; nothing was changed")


def _terminate(args: argparse.Namespace, out: Output) -> int:
    from controller.lifecycle import power

    found = _find(args, args.instances)
    listing = ", ".join(f"{f.instance_id} ({f.name or 'no name'}, {f.region})" for f in found)
    _confirm(f"terminate {listing}?", assume_yes=args.yes)
    results = power.terminate(found)

    def human(stream: TextIO) -> None:
        for r in results:
            stream.write(f"{r['instance_id']}: {r['previous_state']} -> {r['state']}\n")

    out.result({"terminated": results}, human)
    return 0


def _power(action: str) -> Any:
    def run(args: argparse.Namespace, out: Output) -> int:
        from controller.lifecycle import power

        found = _one(args)
        if action == "start":
            result = power.start(found)
        else:
            result = power.stop(found, hibernate=action == "hibernate")

        def human(stream: TextIO) -> None:
            extra = ""
            if result.get("ttl_remaining"):
                extra = f" (TTL paused with {result['ttl_remaining']} left)"
            if result.get("deadline"):
                extra = f" (deadline re-armed: {result['deadline']})"
            stream.write(f"{result['instance_id']}: {action} -> {result['state']}{extra}\n")

        out.result(result, human)
        return 0

    return run


# --- config -----------------------------------------------------------------------------
def _config(args: argparse.Namespace, out: Output) -> int:
    from controller.lifecycle import tag_config

    if args.op in ("get", "set"):
        tag_config.normalize_key(args.key)
    if args.op == "set":
        tag_config.canonical_value(tag_config.normalize_key(args.key), args.value)
    found = _one(args)
    if args.op == "list":
        values = tag_config.listing(found)
        out.result({"instance_id": found.instance_id, "settings": values},
                   lambda s: s.writelines(f"{k}: {'(unset)' if v is None else v}\n"
                                          for k, v in values.items()))
    elif args.op == "get":
        got = tag_config.get(found, args.key)
        out.result(got, lambda s: s.writelines([f"{'(unset)' if got['value'] is None else got['value']}\n"]))
    else:
        done = tag_config.set_value(found, args.key, args.value)
        def human(stream: TextIO) -> None:
            stream.writelines(f"{found.instance_id}: {k} = {v}\n" for k, v in done["set"].items())
            if "shutdown_behaviour" in done:
                stream.write(f"{found.instance_id}: shutdown behaviour = {done['shutdown_behaviour']} "
                             "(what an OS power-off does)\n")

        out.result(done, human)
    return 0


# --- connect ----------------------------------------------------------------------------
def _connect(args: argparse.Namespace, out: Output) -> int:
    import os
    import shlex

    from controller.lifecycle import connect

    extra = shlex.split(args.remote_command) if args.remote_command else None
    result = connect.prepare(_one(args), user=args.user, private=args.private,
                             identity=args.identity, extra=extra)
    if args.print_only or out.json:
        out.result(result, lambda s: s.writelines([shlex.join(result["argv"]) + "\n"]))
        return 0
    out.info(f"connecting as {result['user']}@{result['address']} (host key: {result['host_key']})")
    os.execvp(result["argv"][0], result["argv"])  # noqa: S606 - replaces this process with ssh
    return 1  # not reached


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("list", help="spawn-managed instances (regions queried concurrently)")
    _regions_arg(p, many=True)
    p.add_argument("--state", action="append", default=[],
                   help="states to show (repeatable/comma-separated; `all`; default: not terminated)")
    add_json_flag(p)
    p.set_defaults(func=_list)

    p = subparsers.add_parser("status", help="the full picture of one instance, from the API and tags")
    p.add_argument("instance", metavar="ID|NAME")
    _regions_arg(p, many=False)
    add_json_flag(p)
    p.set_defaults(func=_status)

    p = subparsers.add_parser("extend", help="move the deadline: +2h adds to it, 4h sets it from now")
    p.add_argument("instance", metavar="ID|NAME")
    p.add_argument("duration", metavar="DURATION", help="+DURATION or DURATION, e.g. +2h, 4h, 1h30m")
    _regions_arg(p, many=False)
    add_json_flag(p)
    p.set_defaults(func=_extend)

    p = subparsers.add_parser("terminate", help="terminate instances (asks unless --yes)")
    p.add_argument("instances", metavar="ID|NAME", nargs="+")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    _regions_arg(p, many=False)
    add_json_flag(p)
    p.set_defaults(func=_terminate)

    for action, text in (("stop", "stop an instance, keeping its remaining TTL"),
                         ("start", "start a stopped instance, re-arming its remaining TTL"),
                         ("hibernate", "hibernate an instance launched with --hibernate")):
        p = subparsers.add_parser(action, help=text)
        p.add_argument("instance", metavar="ID|NAME")
        _regions_arg(p, many=False)
        add_json_flag(p)
        p.set_defaults(func=_power(action))

    p = subparsers.add_parser("config", help="lifecycle settings as tags: get, set, list")
    p.add_argument("instance", metavar="ID|NAME")
    ops = p.add_subparsers(dest="op", metavar="OP", required=True)
    g = ops.add_parser("get", help="one setting")
    g.add_argument("key", metavar="KEY")
    s = ops.add_parser("set", help="validate and write one setting")
    s.add_argument("key", metavar="KEY")
    s.add_argument("value", metavar="VALUE")
    ops.add_parser("list", help="every lifecycle setting")
    for sub in (p, g, s, ops.choices["list"]):
        if sub is not p:
            _regions_arg(sub, many=False)
            add_json_flag(sub)
    p.set_defaults(func=_config)

    p = subparsers.add_parser("connect", help="ssh to an instance with its host key checked")
    p.add_argument("instance", metavar="ID|NAME")
    # dest differs from the top-level `command` (the subcommand name), which it would overwrite.
    # An option, not a trailing positional: argparse cannot take one after other options.
    p.add_argument("--command", "-c", dest="remote_command", metavar="CMD",
                   help="run CMD (split like a shell would) instead of an interactive shell")
    p.add_argument("--user", help="login user (default: from the AMI, ec2-user on Amazon Linux)")
    p.add_argument("--identity", "-i", help="private key file for ssh")
    p.add_argument("--private", action="store_true", help="connect to the private address")
    p.add_argument("--print", dest="print_only", action="store_true",
                   help="print the ssh command instead of running it")
    _regions_arg(p, many=False)
    add_json_flag(p)
    p.set_defaults(func=_connect)
