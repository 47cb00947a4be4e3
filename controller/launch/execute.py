"""`spawn launch`: gather facts (reads), plan (pure), then create - and undo on failure.

Order: validate (flags, instance type, identity, VPC, key, groups; reads only) -> AMI (reads) ->
IAM -> SSH & network -> agent bundle -> launch -> running -> agent ready. Every write records an
undo step in a ``Ledger``; a failure after any write rolls back what THIS launch created
(instances, security group, key pair, uploaded bundle object, IAM pieces via ``iam.rollback``)
and reports what was kept (content-addressed, reusable things: an existing role, the bucket).

No fixed sleeps: boto3 waiters (``instance_running``, ``instance_terminated``, and a small custom
waiter for the agent's status tag) and IAM's targeted retry on instance-profile propagation.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from controller import aws
from controller.launch import agent_source, ami, checkip, keys, launch_flags, netsec, pricing, userdata
from controller.launch.launch_flags import LaunchFlags
from controller.launch.plan import ImageFacts, InstanceTypeFacts, LaunchFacts, LaunchPlan, build, printable
from controller.lifecycle.connect import console_output
from controller.lifecycle.view import agent_health, agent_permissions, tags_of
from controller.output import Output
from spored.contract import TAG_AGENT_STATUS, format_remaining, format_timestamp
from spored.errors import ExitStatus, SpawnError, aws_error_code, from_aws
from spored.failsafe import shutdown_behaviour

STEPS = ("validate", "AMI", "agent bundle", "IAM", "SSH & network", "launch", "running", "agent ready")
RUNNING_WAIT = {"Delay": 5, "MaxAttempts": 120}      # up to 10 minutes
TERMINATED_WAIT = {"Delay": 5, "MaxAttempts": 60}    # up to 5 minutes, during rollback only


@dataclass
class Ledger:
    """What this launch created, with how to undo each, newest last."""

    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    _undo: list[tuple[str, str, Callable[[], Any]]] = field(default_factory=list)

    def add(self, what: str, undo: Callable[[], Any], *, kind: str = "") -> None:
        self.created.append(what)
        self._undo.append((what, kind, undo))

    def rollback(self, *, keep: frozenset[str] = frozenset()) -> tuple[list[str], list[str]]:
        """Undo newest first, except the kinds in ``keep``; never raises. Returns (removed, failed)."""
        removed: list[str] = []
        failed: list[str] = []
        while self._undo:
            what, kind, undo = self._undo.pop()
            if kind in keep:
                self.kept.append(what)
                continue
            try:
                extra = undo()
            except Exception as exc:
                failed.append(f"{what}: {exc}")
                continue
            removed.append(what)
            if isinstance(extra, list):
                for line in map(str, extra):
                    (self.kept if line.startswith("kept") else removed).append(line.removeprefix("kept "))
        return removed, failed


@dataclass
class Gathered:
    flags: LaunchFlags
    region: str
    account: str
    caller_arn: str
    type_facts: InstanceTypeFacts
    image: ImageFacts
    vpc_id: str
    subnet_id: str | None
    key_name: str | None  # an existing pair (--key-name or found by fingerprint)
    iam_plan: Any
    source: agent_source.AgentSource | None = None


def _iam() -> Any:
    from controller import iam

    return iam


def _tag_safe(value: str) -> str:
    allowed = set("+-=._:/@ ")
    return "".join(c if c.isalnum() or c in allowed else "_" for c in value)[:256]


def gather(args: argparse.Namespace, lf: LaunchFlags, update: Callable[[str, str], None]) -> Gathered:
    """Everything the plan needs, by reads only. Bad input raises ValidationError here."""
    iam = _iam()
    request = iam.request_from_args(args)
    iam_plan = iam.plan(request)
    region = lf.region or aws.default_region()
    update("validate", "linting the instance role")
    iam_plan.warnings.extend(iam.lint_composed_role(iam_plan, region=region))
    ec2 = aws.client("ec2", region)
    update("validate", f"checking {lf.instance_type} in {region}")
    type_facts = ami.describe_type(ec2, lf.instance_type)
    from controller.launch.plan import check_type

    check_type(lf, type_facts)
    try:
        ident = aws.client("sts", region).get_caller_identity()
    except Exception as exc:
        raise from_aws(exc, action="reading the caller identity") from exc
    if request.permissions_boundary is None:
        # `spawn iam setup` ran in this account: every role spawn creates carries its boundary.
        found = iam.account_boundary(aws.client("iam", region), str(ident["Account"]),
                                     partition=str(ident["Arn"]).split(":")[1] or "aws")
        if found:  # spawn's own boundary: linted by the test suite, like its other documents
            bounded = iam.plan(dataclasses.replace(request, account_boundary=found))
            bounded.warnings.extend(w for w in iam_plan.warnings if w not in bounded.warnings)
            iam_plan = bounded
    vpc_id, subnet_id = netsec.resolve_vpc(ec2, lf.subnet)
    if lf.security_groups:
        netsec.require_groups(ec2, lf.security_groups)
    key_name = lf.key_name
    if key_name:
        keys.require_key_pair(ec2, key_name)
    elif lf.ssh_public_key:
        # a pair holding this key under any name; else spawn's name must be free or hold it
        key_name = keys.find_key_pair(ec2, lf.ssh_public_key) or keys.check_spawn_name(ec2, lf.ssh_public_key)
    if lf.ssh_from_lookup:
        update("validate", "looking up your public IPv4 address for SSH")
        lf = dataclasses.replace(lf, ssh_from=(checkip.caller_cidr(),), ssh_from_lookup=False)
    if not lf.security_groups:
        netsec.find_group(ec2, vpc_id, lf.ssh_from)  # refuses a group under spawn's name it did not make
    update("validate", "done")
    update("AMI", "resolving")
    image = ami.resolve_image(ec2, aws.client("ssm", region), type_facts, lf.ami)
    update("AMI", f"done: {image.image_id} ({image.description or type_facts.architecture})")
    g = Gathered(flags=lf, region=region, account=str(ident["Account"]), caller_arn=str(ident["Arn"]),
                 type_facts=type_facts, image=image, vpc_id=vpc_id, subnet_id=subnet_id,
                 key_name=key_name, iam_plan=iam_plan)
    update("agent bundle", "locating and hashing")
    if not lf.agent_bundle:  # built from this installation on first use (pip), then cached
        from controller import bundle

        bundle.ensure_bundle(progress=lambda message: update("agent bundle", message))
    # SigV4 pre-signed URLs: regions opened since 2014 refuse the older signature.
    s3 = aws.client("s3", region, signature_version="s3v4")
    g.source = agent_source.resolve(lf.agent_bundle, s3=s3, account=g.account, region=region,
                                    architecture=type_facts.architecture)
    # Render once now so an oversize user-data is refused before anything is created.
    make_plan(g, key_name=key_name, group_ids=(), profile_arn=None, role_name=None, now=datetime.now(UTC))
    update("agent bundle", f"sha256 {g.source.sha256[:12]}… ({g.source.origin})")
    return g


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_plain(v) for v in obj]
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return str(obj)


def _profile_placeholder(g: Gathered) -> str:
    """The ARN the profile will have (IAM ARNs are predictable from path and name)."""
    partition = g.caller_arn.split(":")[1] if g.caller_arn.count(":") >= 2 else "aws"
    return f"arn:{partition}:iam::{g.account}:instance-profile{g.iam_plan.path}{g.iam_plan.profile_name}"


def make_plan(g: Gathered, *, key_name: str | None, group_ids: tuple[str, ...], profile_arn: str | None,
              role_name: str | None, now: datetime) -> tuple[LaunchPlan, bytes]:
    from controller.launch.plan import agent_config_for, failsafe_time
    from spored.config import render as render_config
    from spored.failsafe import epoch_for_user_data

    assert g.source is not None  # noqa: S101 - set before planning
    toml = render_config(agent_config_for(g.flags, now))
    at = failsafe_time(g.flags, now)
    data = userdata.render(userdata.BundleRef(g.source.url, g.source.sha256), toml, g.flags.user_data,
                           failsafe_at=epoch_for_user_data(at) if at is not None else 0)
    facts = LaunchFacts(region=g.region, type_facts=g.type_facts, image=g.image,
                        launched_by=_tag_safe(g.caller_arn), key_name=key_name,
                        security_group_ids=group_ids, subnet_id=g.subnet_id, profile_arn=profile_arn,
                        role_name=role_name)
    return build(g.flags, facts, data, now), data


def _planned_group(g: Gathered) -> tuple[str, ...]:
    if g.flags.security_groups:
        return g.flags.security_groups
    return (f"<{netsec.group_name(g.flags.ssh_from)} in {g.vpc_id}>",)


def dry_run(g: Gathered, out: Output) -> int:
    now = datetime.now(UTC)
    assert g.source is not None  # noqa: S101 - gather() resolved it
    role_name = getattr(g.iam_plan, "role_name", None)
    key_name = g.key_name or (keys.key_pair_name(g.flags.ssh_public_key) if g.flags.ssh_public_key else None)
    plan, data = make_plan(g, key_name=key_name, group_ids=_planned_group(g),
                           profile_arn=_profile_placeholder(g), role_name=role_name, now=now)
    writes = []
    writes.append(f"IAM: role/profile {role_name or '(per plan)'} (created only if absent)")
    if g.flags.ssh_public_key and not g.key_name:
        writes.append(f"ImportKeyPair {key_name}")
    if not g.flags.security_groups:
        writes.append(f"security group {netsec.group_name(g.flags.ssh_from)} in {g.vpc_id} "
                      "(created only if absent)")
    if g.source.bucket:
        writes.append(f"upload agent bundle to s3://{g.source.bucket}/{g.source.key} (if absent)")
    writes.append(f"RunInstances x{g.flags.count}")
    decoded = [{"content_type": ct, "filename": fn, "text": body.decode("utf-8", errors="replace")}
               for ct, fn, body in userdata.parts(data)]
    result = {
        "dry_run": True,
        "region": g.region,
        "flags": launch_flags.as_dict(g.flags),
        "iam": g.iam_plan.to_dict() if hasattr(g.iam_plan, "to_dict") else _plain(g.iam_plan),
        "agent_bundle": {"url": g.source.url, "sha256": g.source.sha256, "origin": g.source.origin},
        "run_instances": _plain(printable(plan.run_instances)),
        "user_data": {"bytes": len(data), "gzipped": data[:2] == b"\x1f\x8b", "parts": decoded},
        "would_create": writes,
        "estimated_usd_per_hour": pricing.hourly_estimate(g.flags.instance_type, g.flags.count),
    }

    def human(stream: TextIO) -> None:
        import json

        stream.write("DRY RUN: nothing was created.\n\n== IAM ==\n")
        stream.write(json.dumps(result["iam"], indent=2, default=str) + "\n")
        stream.write("\n== RunInstances ==\n")
        stream.write(json.dumps(result["run_instances"], indent=2, default=str) + "\n")
        stream.write(f"\n== user-data ({len(data)} bytes) ==\n")
        for part in decoded:
            stream.write(f"--- {part['content_type']} {part['filename']}\n{part['text']}\n")
        stream.write("\n== would create ==\n" + "".join(f"- {w}\n" for w in writes))

    out.result(result, human)
    return 0


def _agent_waiter(ec2: Any, seconds: float) -> Any:
    from botocore.waiter import WaiterModel, create_waiter_with_client

    delay = 5 if seconds >= 30 else 1
    attempts = max(1, int(seconds // delay))
    model = WaiterModel({"version": 2, "waiters": {"AgentReady": {
        "operation": "DescribeInstances", "delay": delay, "maxAttempts": attempts,
        "acceptors": [
            {"matcher": "pathAll", "state": "success", "expected": True,
             "argument": f"Reservations[].Instances[].contains(Tags[].Key || `[]`, '{TAG_AGENT_STATUS}')"},
            {"matcher": "pathAny", "state": "failure", "expected": "terminated",
             "argument": "Reservations[].Instances[].State.Name"},
        ]}}})
    return create_waiter_with_client("AgentReady", model, ec2)


def _describe(ec2: Any, ids: list[str]) -> list[dict[str, Any]]:
    resp = ec2.describe_instances(InstanceIds=ids)
    return [i for r in resp.get("Reservations", []) for i in r.get("Instances", [])]


def _terminate_and_wait(ec2: Any, ids: list[str]) -> None:
    ec2.terminate_instances(InstanceIds=ids)
    ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig=TERMINATED_WAIT)


def execute(g: Gathered, out: Output, update: Callable[[str, str], None], *,
            ledger: Ledger | None = None, disposable: bool = False) -> dict[str, Any]:
    """Create everything and launch. With ``ledger`` given, the caller owns the undo steps: a
    failure leaves them in it for the caller's own cleanup instead of rolling back here.
    ``disposable``: undoing also removes a content-addressed role and profile this run created.

    Phases, in order: agent bundle -> IAM -> SSH & network -> plan -> RunInstances -> running
    (each write records its undo in the ledger; a failure in any of them rolls back), then the
    agent wait, which creates nothing and so never rolls back."""
    iam = _iam()
    ec2 = aws.client("ec2", g.region)
    s3 = aws.client("s3", g.region, signature_version="s3v4")
    owner = ledger is None
    ledger = Ledger() if ledger is None else ledger
    started = time.monotonic()
    assert g.source is not None  # noqa: S101 - gather() resolved it
    source = g.source
    try:
        _upload_bundle(g, source, s3, ledger, update)
        provisioned = _provision_iam(g, iam, ledger, update, disposable=disposable)
        key_name, group_ids = _key_and_group(g, ec2, ledger, update)
        now = datetime.now(UTC)
        plan, _data = make_plan(g, key_name=key_name, group_ids=group_ids,
                                profile_arn=provisioned.profile_arn, role_name=provisioned.role_name,
                                now=now)
        ids = _run_instances(ec2, iam, plan, ledger, update, count=g.flags.count)
        _wait_running(ec2, ids, update)
    except BaseException as exc:
        if owner:
            removed, failed = ledger.rollback()
            _report_rollback(out, removed, failed, ledger.kept, exc)
        raise
    agent, confirmed, instances = _await_agent(g.flags, ec2, ids, update)
    result = _summary(g, plan, instances, agent, ledger, seconds=time.monotonic() - started)
    result["agent_confirmed"] = confirmed
    return result


def _upload_bundle(g: Gathered, source: agent_source.AgentSource, s3: Any, ledger: Ledger,
                   update: Callable[[str, str], None]) -> None:
    """Put the agent bundle in the account's private bucket when the source names one (a URL
    source uploads nothing). Only an object this run created is undone; the bucket is kept."""
    if source.bucket:
        update("agent bundle", f"uploading to s3://{source.bucket} (if absent)")
        up = agent_source.upload(s3, source, g.account, g.region)
        if up.object_created:
            ledger.add(f"s3://{up.bucket}/{up.key}",
                       lambda: agent_source.delete_object(s3, up, g.account))
        if up.bucket_created:
            ledger.created.append(f"bucket {up.bucket}")
        ledger.kept.append(f"bucket {up.bucket} (private, reused by later launches)")
    update("agent bundle", f"done: sha256 {source.sha256[:12]}… ({source.origin})")


def _provision_iam(g: Gathered, iam: Any, ledger: Ledger, update: Callable[[str, str], None], *,
                   disposable: bool) -> Any:
    """Create the planned role and instance profile unless they exist; an existing
    (content-addressed) role is reused and kept. Returns what ``iam.provision`` reports."""
    update("IAM", "provisioning")
    provisioned = iam.provision(g.iam_plan, region=g.region)
    if provisioned.created:
        ledger.add(f"IAM {', '.join(provisioned.created)}",
                   lambda: iam.rollback(provisioned, reusable_too=disposable), kind="iam")
        update("IAM", f"done: created {', '.join(provisioned.created)}")
    else:
        ledger.kept.append(f"IAM role {provisioned.role_name} (existing, reusable)")
        update("IAM", f"done: reusing {provisioned.role_name}")
    return provisioned


def _key_and_group(g: Gathered, ec2: Any, ledger: Ledger,
                   update: Callable[[str, str], None]) -> tuple[str | None, tuple[str, ...]]:
    """Import the SSH public key (unless a pair already holds it) and ensure spawn's security
    group (unless --security-group named groups). Returns (key name or None, group ids)."""
    lf = g.flags
    update("SSH & network", "key pair and security group")
    key_name = g.key_name
    if key_name is None and lf.ssh_public_key:
        key_name, created = keys.import_key_pair(ec2, lf.ssh_public_key)
        if created:
            name = key_name
            ledger.add(f"key pair {name}", lambda: keys.delete_key_pair(ec2, name))
    group_ids = lf.security_groups
    if not group_ids:
        group_id, created = netsec.ensure_group(ec2, g.vpc_id, lf.ssh_from)
        group_ids = (group_id,)
        if created:
            ledger.add(f"security group {group_id}", lambda: netsec.delete_group(ec2, group_id))
        else:
            ledger.kept.append(f"security group {group_id} (existing, reusable)")
    update("SSH & network", f"done: key {key_name or 'none'}, group {', '.join(group_ids)}")
    return key_name, group_ids


def _run_instances(ec2: Any, iam: Any, plan: LaunchPlan, ledger: Ledger,
                   update: Callable[[str, str], None], *, count: int) -> list[str]:
    """RunInstances (retried only while a new instance profile propagates); records the
    terminate-and-wait undo. Returns the instance ids."""
    update("launch", f"RunInstances x{count}")
    try:
        resp = iam.retry_on_profile_propagation(lambda: ec2.run_instances(**plan.run_instances))
    except SpawnError:
        raise
    except Exception as exc:
        error = from_aws(exc, action="launching (RunInstances)")
        if aws_error_code(exc) == "IdempotentParameterMismatch":
            error.hint = ("an earlier launch used this --client-token with other parameters (the "
                          "deadline, user-data and bundle URL are computed per run); `spawn list` "
                          "shows what it launched")
        raise error from exc
    ids = [str(i["InstanceId"]) for i in resp["Instances"]]
    ledger.add(f"instances {', '.join(ids)}", lambda: _terminate_and_wait(ec2, ids), kind="instance")
    update("launch", f"done: {', '.join(ids)}")
    return ids


def _wait_running(ec2: Any, ids: list[str], update: Callable[[str, str], None]) -> None:
    """The ``instance_running`` waiter (a failure here still rolls back)."""
    update("running", "waiting (instance_running waiter)")
    try:
        ec2.get_waiter("instance_running").wait(InstanceIds=ids, WaiterConfig=RUNNING_WAIT)
    except Exception as exc:
        raise from_aws(exc, action="waiting for the instances to run") from exc
    update("running", "done")


def _await_agent(lf: LaunchFlags, ec2: Any, ids: list[str], update: Callable[[str, str], None],
                 ) -> tuple[str, bool | None, list[dict[str, Any]]]:
    """Describe the instances; unless --no-wait, wait for the agent's status tag and describe
    them again. Returns (agent line, confirmed: None when not waited for, instances)."""
    agent = "not waited for (--no-wait)"
    confirmed: bool | None = None
    instances = _describe(ec2, ids)
    if lf.no_wait:
        return agent, confirmed, instances
    update("agent ready", f"waiting up to {format_remaining(lf.wait_agent)} for {TAG_AGENT_STATUS}")
    try:
        _agent_waiter(ec2, lf.wait_agent.total_seconds()).wait(InstanceIds=ids)
        agent, confirmed = "ready", True
    except Exception as exc:
        if type(exc).__name__ != "WaiterError":
            raise from_aws(exc, action="waiting for the agent") from exc
        agent, confirmed = f"not confirmed after {format_remaining(lf.wait_agent)}", False
    instances = _describe(ec2, ids)
    denied = _denial(ec2, instances)
    if denied is not None:
        agent, confirmed = denied, False
    update("agent ready", f"done: {agent}" if confirmed else agent)
    return agent, confirmed, instances


def _denial(ec2: Any, instances: list[dict[str, Any]]) -> str | None:
    """The first denial an agent reported (its tag, else the console when CreateTags is denied
    too), as its health line; None when no agent reported one."""
    for inst in instances:
        tags = tags_of(inst)
        console = None if TAG_AGENT_STATUS in tags else console_output(ec2, str(inst["InstanceId"]))
        permissions = agent_permissions(tags, console)
        if permissions is not None and permissions["verdict"] == "denied":
            return agent_health(tags, console)
    return None


def _report_rollback(out: Output, removed: list[str], failed: list[str], kept: list[str],
                     exc: BaseException) -> None:
    out.warn(f"launch failed ({type(exc).__name__}); rolling back what this launch created")
    for item in removed:
        out.info(f"  removed: {item}")
    for item in failed:
        out.warn(f"  could NOT remove: {item} - delete it by hand")
    for item in kept:
        out.info(f"  kept: {item}")
    if not removed and not failed:
        out.info("  nothing had been created")


def _summary(g: Gathered, plan: LaunchPlan, instances: list[dict[str, Any]], agent: str,
             ledger: Ledger, *, seconds: float) -> dict[str, Any]:
    tags = {t["Key"]: t["Value"] for t in (instances[0].get("Tags", []) if instances else [])}
    now = datetime.now(UTC)
    user = ami.login_user(g.image.description)
    return {
        "region": g.region,
        "name": plan.name,
        "image_id": g.image.image_id,
        "instance_type": g.flags.instance_type,
        "instances": [{
            "instance_id": i["InstanceId"],
            "state": i.get("State", {}).get("Name"),
            "public_ip": i.get("PublicIpAddress"),
            "private_ip": i.get("PrivateIpAddress"),
            "connect": f"spawn connect {i['InstanceId']} --region {g.region}",
        } for i in instances],
        "deadline": format_timestamp(plan.deadline) if plan.deadline else None,
        # The OS-level failsafe the user-data armed first (None only with --no-timeout).
        "failsafe_at": format_timestamp(plan.failsafe_at) if plan.failsafe_at else None,
        "shutdown_behaviour": shutdown_behaviour(g.flags.on_complete),
        "time_left": format_remaining(plan.deadline - now) if plan.deadline else None,
        "idle_timeout": tags.get("spawn:idle-timeout"),
        "on_complete": g.flags.on_complete.value,
        "ssh_user": user,
        "agent": agent,
        "agent_bundle_sha256": g.source.sha256 if g.source else None,
        "created": ledger.created,
        "kept": ledger.kept,
        "estimated_usd_per_hour": pricing.hourly_estimate(g.flags.instance_type, g.flags.count),
        "estimate_basis": pricing.PRICES_SOURCE,
        "seconds": round(seconds, 2),
    }


def render_summary(result: dict[str, Any], stream: TextIO) -> None:
    n = len(result["instances"])
    stream.write(f"launched {n} instance{'s' if n != 1 else ''} '{result['name']}' "
                 f"({result['instance_type']}, {result['image_id']}) in {result['region']}\n")
    for inst in result["instances"]:
        address = inst["public_ip"] or inst["private_ip"] or "no address yet"
        stream.write(f"  {inst['instance_id']}  {inst['state']}  {address}\n")
    if result["deadline"]:
        stream.write(f"deadline: {result['deadline']} (in {result['time_left']}), then "
                     f"{result['on_complete']}\n")
    if result["idle_timeout"]:
        stream.write(f"idle timeout: {result['idle_timeout']}, then {result['on_complete']}\n")
    stream.write(f"agent: {result['agent']}\n")
    if result.get("agent_confirmed") is False:
        stream.write(armed_line(result) + "\n")
    first = result["instances"][0]["instance_id"] if result["instances"] else "ID"
    stream.write(f"connect: spawn connect {first} --region {result['region']} "
                 f"(as {result['ssh_user']})\n")
    if result["estimated_usd_per_hour"] is not None:
        stream.write(f"cost: ~${result['estimated_usd_per_hour']}/h "
                     f"(ESTIMATE: {result['estimate_basis']})\n")
    if result["kept"]:
        stream.write("reused: " + "; ".join(result["kept"]) + "\n")


def armed_line(result: dict[str, Any]) -> str:
    """What ends the instance when its agent is not confirmed."""
    if result.get("failsafe_at"):
        return (f"failsafe: will power off at {result['failsafe_at']} (then {result['shutdown_behaviour']}) "
                "unless the agent reports; `spawn status` shows it")
    return "failsafe: none (--no-timeout): nothing ends this instance but you (`spawn terminate`)"


def run(args: argparse.Namespace, out: Output) -> int:
    if getattr(args, "use_defaults_file", True):  # the sandbox launches without the user's defaults
        from controller import defaults

        defaults.apply(args)  # flags > environment > ~/.config/spawn/config.toml > built-in
    lf = launch_flags.validate(args)
    if args.no_timeout:
        out.warn("--no-timeout: no failsafe is armed; the instance runs until you end it")
    if lf.timeout_defaulted:
        out.warn("no --ttl or --idle-timeout: an idle timeout of 1h applies (--no-timeout to allow none)")
    if launch_flags.open_to_everyone(lf):
        out.warn(f"SSH open to everyone ({', '.join(lf.ssh_from)}), as --ssh-from asked: anyone on the "
                 "internet can try to log in")
    if not lf.key_name and not lf.ssh_public_key:
        out.warn("no SSH key (--key-name/--ssh-key, or ~/.ssh/id_ed25519.pub): no SSH ingress, "
                 "`spawn connect` will not work")
    steps = STEPS[:3] if lf.dry_run else STEPS
    with out.progress(steps) as update:
        update("validate", "flags ok")
        g = gather(args, lf, update)
        for warning in getattr(g.iam_plan, "warnings", []) or []:
            out.warn(str(warning))
        result = None if lf.dry_run else execute(g, out, update)
    if result is None:
        return dry_run(g, out)
    out.result(result, lambda stream: render_summary(result, stream))
    if result.get("agent_confirmed") is False:
        out.warn(f"agent: {result['agent']}; {armed_line(result)}")
        return ExitStatus.AGENT_UNCONFIRMED
    return 0
