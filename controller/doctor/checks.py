"""The checks of `spawn doctor`: each asks AWS (reads and DryRuns only) and returns one ``Check``.

They run in a fixed order and share what they learn through a ``Context`` (the account, the region,
the VPC, the AMI...). A check whose input is missing because an earlier check failed reports
``could-not-check`` and names that check. Nothing here writes to AWS: every EC2 call that would
create something is made with ``DryRun=True``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller import aws, permissions
from controller.doctor import access
from controller.doctor.report import Check, Status
from controller.launch import agent_source, ami, checkip, keys, launch_flags
from spored.contract import MANAGED_VALUE, TAG_MANAGED
from spored.errors import SpawnError, aws_error_code, aws_error_message

CLI_POLICY_FIX = "attach the policy `spawn iam cli-policy --scoped` prints to the user or role you use"
DRY_RUN_NAME = "spawn-doctor-dry-run"
# A documentation address (RFC 5737 TEST-NET-1) for the ingress DryRun: never a real client.
DRY_RUN_CIDR = "192.0.2.0/24"
ARCHITECTURES = ("x86_64", "arm64")
DEFAULT_TYPES = {"x86_64": "t3.micro", "arm64": "t4g.micro"}
# The EC2 reads of a launch, asked with DryRun and no filter (each accepts DryRun).
# The EC2 reads of a launch, asked with DryRun (each accepts it) and a small page where the API has
# one. A read that answers instead of saying DryRunOperation was still allowed.
READ_DRY_RUNS: dict[str, dict[str, Any]] = {
    "DescribeInstances": {"MaxResults": 5},
    "DescribeInstanceTypes": {"InstanceTypes": [DEFAULT_TYPES["x86_64"]]},
    "DescribeImages": {"MaxResults": 5, "Owners": ["amazon"]}, "DescribeVpcs": {"MaxResults": 5},
    "DescribeSubnets": {"MaxResults": 5}, "DescribeKeyPairs": {},
    "DescribeSecurityGroups": {"MaxResults": 5}}


@dataclass(frozen=True)
class Inputs:
    """What the user asked doctor to check (the same meaning as `spawn launch`'s flags)."""

    region: str | None = None
    region_source: str = "--region"  # or the defaults file, when the region came from there
    instance_type: str | None = None
    subnet: str | None = None
    key_name: str | None = None
    ssh_key: str | None = None
    ssh_from: tuple[str, ...] = ()
    agent_bundle: str | None = None
    home: Path = field(default_factory=Path.home)


@dataclass
class Context:
    inputs: Inputs
    region: str | None = None
    region_source: str = ""
    region_usable: bool = False  # known to be enabled, and credentials work there
    account: str | None = None
    caller_arn: str | None = None
    vpc_id: str | None = None
    subnet_id: str | None = None
    images: dict[str, str] = field(default_factory=dict)  # architecture -> AMI id
    instance_type: str | None = None
    ami_parameter: str | None = None
    public_key: str | None = None
    verdicts: access.Verdicts = field(default_factory=access.Verdicts)

    def client(self, service: str, **kw: Any) -> Any:
        assert self.region  # noqa: S101 - regional checks run only once the region is known
        return aws.client(service, self.region, **kw)

    def proven(self, service: str, operation: str) -> None:
        """A read succeeded: its declared actions are allowed (evidence for the permissions check)."""
        for action in permissions.actions_for(service, operation) or ():
            self.verdicts.record(action, "allowed", f"{operation} succeeded")


def _code(exc: BaseException) -> str:
    return aws_error_code(exc) or type(exc).__name__


def _message(exc: BaseException) -> str:
    return f"{_code(exc)}: {aws_error_message(exc)}"


def _denied(exc: BaseException) -> bool:
    return _code(exc) in access.DRYRUN_DENIED | {"AccessDeniedException", "403", "Forbidden"}


def _aws_failure(name: str, exc: BaseException, doing: str, action: str) -> Check:
    """A read that a launch also makes failed: denied -> FAIL, anything else -> could not check."""
    if _denied(exc):
        return Check(name, Status.FAIL, f"{doing}: {_message(exc)}",
                     f"allow {action}: {CLI_POLICY_FIX}")
    return Check(name, Status.UNKNOWN, f"{doing}: {_message(exc)}")


def _needs(name: str, what: str) -> Check:
    return Check(name, Status.UNKNOWN, f"needs {what} (see above)")


# --- region and credentials ------------------------------------------------------------------
def resolve_region(ctx: Context) -> None:
    """Where the region comes from, in the order `spawn launch` looks (no AWS call): the flag or
    the defaults file (``Inputs.region``), then boto3's own (AWS_DEFAULT_REGION, the profile's),
    then AWS_REGION (``controller.aws.default_region``)."""
    if ctx.inputs.region:
        ctx.region, ctx.region_source = ctx.inputs.region, ctx.inputs.region_source
        return
    session = aws.session()
    if session.region_name:
        profile = session.profile_name or "default"
        ctx.region = session.region_name
        ctx.region_source = "AWS_DEFAULT_REGION" if os.environ.get("AWS_DEFAULT_REGION") == ctx.region \
            else f"the AWS config (profile {profile})"
    elif os.environ.get("AWS_REGION"):
        ctx.region, ctx.region_source = os.environ["AWS_REGION"], "AWS_REGION"


def credentials(ctx: Context) -> Check:
    name = "credentials"
    try:
        found = aws.session().get_credentials()
    except Exception as exc:  # e.g. ProfileNotFound for an AWS_PROFILE that is not configured
        return Check(name, Status.FAIL, f"credentials could not be loaded: {_message(exc)}",
                     "check AWS_PROFILE and ~/.aws/config (`aws configure list`)")
    if found is None:
        return Check(name, Status.FAIL, "no AWS credentials found",
                     "configure credentials: `aws configure`, `aws sso login --profile P` with "
                     "AWS_PROFILE=P, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    source = getattr(found, "method", "") or "unknown source"
    try:
        ident = aws.client("sts", ctx.region or "us-east-1").get_caller_identity()
    except Exception as exc:
        code = _code(exc)
        fix = ("refresh them (`aws sso login`, or new temporary keys)" if "Expired" in code else
               "check the access key and secret (they are not valid for AWS)" if code in {
                   "InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException"}
               else "check the network path to AWS (proxy, AWS_ENDPOINT_URL)")
        return Check(name, Status.FAIL, f"credentials from {source} were refused: {_message(exc)}", fix)
    ctx.account, ctx.caller_arn = str(ident["Account"]), str(ident["Arn"])
    detail = f"{ctx.caller_arn} (account {ctx.account}; credentials from {source})"
    if access.principal_of(ctx.caller_arn).kind == "root":
        # IAM User Guide, "Root user best practices": don't use the root user for everyday tasks.
        return Check(name, Status.WARN, detail + ": the account's root user",
                     "use an IAM user or role with `spawn iam cli-policy --scoped` instead of root")
    return Check(name, Status.OK, detail)


def region(ctx: Context) -> Check:
    name = "region"
    if not ctx.region:
        return Check(name, Status.FAIL, "no region configured",
                     "pass --region, set AWS_REGION, add `region = \"...\"` to the defaults file "
                     "(`spawn defaults path`), or `aws configure set region REGION`")
    if not launch_flags.REGION_RE.match(ctx.region):
        return Check(name, Status.FAIL, f"{ctx.region!r} (from {ctx.region_source}) is not a region name",
                     "use a region name such as us-east-1")
    where = f"{ctx.region} (from {ctx.region_source})"
    if ctx.account is None:
        return Check(name, Status.UNKNOWN, f"{where}; whether it is enabled needs credentials")
    try:
        listed = ctx.client("ec2").describe_regions(AllRegions=True)["Regions"]
    except Exception as exc:
        if _denied(exc):
            return _aws_failure(name, exc, f"{where}: listing regions", "ec2:DescribeRegions")
        return Check(name, Status.FAIL, f"{where}: EC2 in this region did not answer: {_message(exc)}",
                     "if this is an opt-in region, enable it (AWS console: Account > AWS Regions), "
                     "or choose another region")
    ctx.proven("ec2", "DescribeRegions")
    status = next((r.get("OptInStatus") for r in listed if r.get("RegionName") == ctx.region), None)
    # EC2 API Reference, Region: OptInStatus is opt-in-not-required | opted-in | not-opted-in.
    if status is None:
        return Check(name, Status.FAIL, f"{where} is not a region of this partition",
                     "choose a region from `aws ec2 describe-regions`")
    if status == "not-opted-in":
        return Check(name, Status.FAIL, f"{where} is an opt-in region that this account has not enabled",
                     "enable it (AWS console: Account > AWS Regions) or choose another region")
    ctx.region_usable = True
    return Check(name, Status.OK, f"{where}, enabled ({status})")


# --- network -----------------------------------------------------------------------------------
def network(ctx: Context) -> Check:
    """The VPC and subnet a launch would use: --subnet, or the default VPC's default subnets."""
    name = "network"
    if not ctx.region_usable:
        return _needs(name, "credentials and an enabled region")
    ec2 = ctx.client("ec2")
    if ctx.inputs.subnet:
        try:
            subnets = ec2.describe_subnets(SubnetIds=[ctx.inputs.subnet])["Subnets"]
        except Exception as exc:
            if _code(exc).startswith("InvalidSubnetID"):
                return Check(name, Status.FAIL, f"{ctx.inputs.subnet} is not in {ctx.region}",
                             "pass a subnet of this region (`aws ec2 describe-subnets`)")
            return _aws_failure(name, exc, "describing the subnet", "ec2:DescribeSubnets")
        ctx.proven("ec2", "DescribeSubnets")
        chosen = subnets[0]
        ctx.vpc_id, ctx.subnet_id = str(chosen["VpcId"]), ctx.inputs.subnet
        return _public_ip(name, f"{ctx.subnet_id} in {ctx.vpc_id}", [chosen])
    try:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    except Exception as exc:
        return _aws_failure(name, exc, "finding the default VPC", "ec2:DescribeVpcs")
    ctx.proven("ec2", "DescribeVpcs")
    if not vpcs:
        # EC2 API Reference, RunInstances SubnetId: without a subnet EC2 picks a default subnet of
        # the default VPC; "If you don't have a default VPC, you must specify a subnet ID".
        return Check(name, Status.FAIL, f"no default VPC in {ctx.region}",
                     f"`aws ec2 create-default-vpc --region {ctx.region}`, or pass --subnet subnet-...")
    ctx.vpc_id = str(vpcs[0]["VpcId"])
    try:
        subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [ctx.vpc_id]},
                                                {"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    except Exception as exc:
        return _aws_failure(name, exc, "listing the default subnets", "ec2:DescribeSubnets")
    ctx.proven("ec2", "DescribeSubnets")
    if not subnets:
        return Check(name, Status.FAIL, f"default VPC {ctx.vpc_id} has no default subnet",
                     f"`aws ec2 create-default-subnet --availability-zone {ctx.region}a`, "
                     "or pass --subnet subnet-...")
    zones = sorted(str(s.get("AvailabilityZone", "?")) for s in subnets)
    return _public_ip(name, f"default VPC {ctx.vpc_id}, default subnets in {', '.join(zones)}", subnets)


def _public_ip(name: str, where: str, subnets: list[dict[str, Any]]) -> Check:
    if any(s.get("MapPublicIpOnLaunch") for s in subnets):
        return Check(name, Status.OK, where)
    # The instance fetches its agent bundle over HTTPS (an S3 pre-signed URL). Without a public IP
    # that needs a NAT gateway or an S3 gateway endpoint, which this check does not inspect.
    return Check(name, Status.WARN, f"{where}: instances get no public IP address",
                 "make sure the subnet reaches S3 (NAT gateway or S3 gateway endpoint), "
                 "or use a subnet that assigns public IPs")


# --- AMI -------------------------------------------------------------------------------------
def image(ctx: Context) -> Check:
    """The public SSM parameter `spawn launch` reads for its default AMI, and the AMI it names."""
    name = "ami"
    if not ctx.region_usable:
        return _needs(name, "credentials and an enabled region")
    ec2, ssm = ctx.client("ec2"), ctx.client("ssm")
    if ctx.inputs.instance_type:
        try:
            facts = ami.describe_type(ec2, ctx.inputs.instance_type)
        except SpawnError as exc:
            return Check(name, Status.FAIL, exc.message, "choose an instance type offered in this region")
        ctx.proven("ec2", "DescribeInstanceTypes")
        wanted = {facts.architecture: (ami.ssm_parameter(facts), facts.instance_type)}
    else:
        wanted = {arch: (ami.AL2023_PARAMETER.format(arch=arch), DEFAULT_TYPES[arch])
                  for arch in ARCHITECTURES}
    found = []
    for arch, (parameter, instance_type) in wanted.items():
        try:
            image_id = str(ssm.get_parameter(Name=parameter)["Parameter"]["Value"])
        except Exception as exc:
            if _code(exc) == "ParameterNotFound":
                return Check(name, Status.FAIL, f"{parameter} does not exist in {ctx.region}",
                             "pass --ami ami-... to `spawn launch`")
            return _aws_failure(name, exc, f"reading {parameter}", "ssm:GetParameter")
        ctx.proven("ssm", "GetParameter")
        try:
            images = ec2.describe_images(ImageIds=[image_id])["Images"]
        except Exception as exc:
            if not _code(exc).startswith("InvalidAMIID"):
                return _aws_failure(name, exc, f"describing {image_id}", "ec2:DescribeImages")
            images = []
        if not images:
            return Check(name, Status.FAIL, f"{parameter} names {image_id}, which EC2 does not know here",
                         "pass --ami ami-... to `spawn launch`")
        ctx.proven("ec2", "DescribeImages")
        if ctx.images == {}:
            ctx.instance_type, ctx.ami_parameter = instance_type, parameter
        ctx.images[arch] = image_id
        found.append(f"{arch} {image_id}")
    return Check(name, Status.OK, f"{'; '.join(found)} (from {', '.join(p for p, _ in wanted.values())})")


# --- permissions -----------------------------------------------------------------------------
def simulate(ctx: Context, iam: Any = None) -> str | None:
    """Ask the policy simulator about every action a launch needs; None when it answered, else why not.

    No retries (``max_attempts=1``): an endpoint that cannot simulate (moto answers HTTP 500) is an
    answer, not a transient failure."""
    assert ctx.caller_arn and ctx.account and ctx.region  # noqa: S101 - checked by the caller
    principal = access.principal_of(ctx.caller_arn)
    if principal.kind not in ("user", "role"):
        return f"the caller {ctx.caller_arn} is not an IAM user or role session"
    iam = iam or aws.client("iam", ctx.region, max_attempts=1)
    source = principal.arn
    if principal.role_name:
        try:
            source = str(iam.get_role(RoleName=principal.role_name)["Role"]["Arn"])
        except Exception as exc:
            return f"iam:GetRole on {principal.role_name}: {_message(exc)}"
    partition = access.partition_of(ctx.caller_arn)
    from controller.iam.setup import account_boundary

    try:
        boundary = account_boundary(iam, ctx.account, partition=partition)
    except SpawnError:
        boundary = None
    context = access.simulation_context(ctx.account, boundary)
    groups = access.simulation_groups(
        permissions.launch_actions(), partition=partition, account=ctx.account, region=ctx.region,
        bucket=agent_source.bucket_name(ctx.account, ctx.region),
        ami_parameter=ctx.ami_parameter or ami.AL2023_PARAMETER.format(arch="x86_64"))
    for resource, actions in groups.items():
        try:
            pages = iam.get_paginator("simulate_principal_policy").paginate(
                PolicySourceArn=source, ActionNames=actions, ResourceArns=[resource],
                ContextEntries=context)
            for page in pages:
                access.read_simulation(page.get("EvaluationResults", []), ctx.verdicts)
        except Exception as exc:
            return f"iam:SimulatePrincipalPolicy: {_message(exc)}"
    return None


def _dry_runs(ctx: Context) -> list[tuple[str, tuple[str, ...], Callable[[], Any]]]:
    """The EC2 writes of a launch, as DryRun requests shaped like the real ones."""
    ec2 = ctx.client("ec2")
    tags = [{"Key": TAG_MANAGED, "Value": MANAGED_VALUE}]
    runs: list[tuple[str, tuple[str, ...], Callable[[], Any]]] = []
    if ctx.images and ctx.instance_type:
        image_id = next(iter(ctx.images.values()))
        run: dict[str, Any] = {
            "ImageId": image_id, "InstanceType": ctx.instance_type, "MinCount": 1, "MaxCount": 1,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags},
                                  {"ResourceType": "volume", "Tags": tags}],
            "MetadataOptions": {"HttpTokens": "required"}, "DryRun": True}
        if ctx.subnet_id:
            run["SubnetId"] = ctx.subnet_id
        runs.append(("RunInstances", ("ec2:RunInstances", "ec2:CreateTags"),
                     lambda: ec2.run_instances(**run)))
    if ctx.vpc_id:
        vpc_id = ctx.vpc_id
        runs.append(("CreateSecurityGroup", ("ec2:CreateSecurityGroup", "ec2:CreateTags"),
                     lambda: ec2.create_security_group(
                         GroupName=DRY_RUN_NAME, Description="spawn doctor (dry run)", VpcId=vpc_id,
                         TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
                         DryRun=True)))
        # Ingress is added only to spawn's own group: asked on one that exists already (a policy
        # may allow it only on spawn:managed groups); without one, the simulator answers.
        managed_group = _managed_group(ec2, vpc_id)
        if managed_group:
            runs.append(("AuthorizeSecurityGroupIngress", ("ec2:AuthorizeSecurityGroupIngress",),
                         lambda: ec2.authorize_security_group_ingress(
                             GroupId=managed_group, DryRun=True, IpPermissions=[
                                 {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                                  "IpRanges": [{"CidrIp": DRY_RUN_CIDR}]}])))
    for operation, page in READ_DRY_RUNS.items():
        if f"ec2:{operation}" in ctx.verdicts.allowed:
            continue  # an earlier check made this read
        runs.append((operation, (f"ec2:{operation}",), _read_call(ec2, operation, page)))
    material = ctx.public_key or _SAMPLE_KEY
    runs.append(("ImportKeyPair", ("ec2:ImportKeyPair", "ec2:CreateTags"),
                 lambda: ec2.import_key_pair(
                     KeyName=DRY_RUN_NAME, PublicKeyMaterial=material.encode(), DryRun=True,
                     TagSpecifications=[{"ResourceType": "key-pair", "Tags": tags}])))
    # TerminateInstances and the rollback deletes need an existing resource to name: what AWS
    # answers to a DryRun on an id that does not exist is not documented, so they are left to
    # the simulator (on a spawn:managed resource ARN).
    return runs


def _read_call(ec2: Any, operation: str, page: dict[str, Any]) -> Callable[[], Any]:
    method = getattr(ec2, "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_"))
    return lambda: method(DryRun=True, **page)


def _managed_group(ec2: Any, vpc_id: str) -> str | None:
    try:
        groups = ec2.describe_security_groups(Filters=[
            {"Name": f"tag:{TAG_MANAGED}", "Values": [MANAGED_VALUE]},
            {"Name": "vpc-id", "Values": [vpc_id]}])
    except Exception:
        return None
    found = groups.get("SecurityGroups", [])
    return str(found[0]["GroupId"]) if found else None


# An ed25519 key used only as DryRun material when the user has none (never imported).
_SAMPLE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq2lNH3Xk7GZqj0m8r2vJ0eP7Wq7l1v3yJd0QmFvYtB doctor"


def permissions_check(ctx: Context) -> Check:
    name = "permissions"
    if not ctx.region_usable:
        return _needs(name, "credentials and an enabled region")
    not_simulated = simulate(ctx)
    for operation, actions, call in _dry_runs(ctx):
        try:
            call()
            # A read that answered was allowed; a write that "succeeded" under DryRun is not a
            # documented answer and proves nothing.
            code = access.DRYRUN_ALLOWED if operation in READ_DRY_RUNS else "no error"
        except Exception as exc:
            code = _code(exc)
        access.read_dry_run(code, actions, ctx.verdicts, operation)
    needed = permissions.launch_actions()
    verdicts = ctx.verdicts
    denied = {a: verdicts.denied[a] for a in needed if a in verdicts.denied}
    unknown = [a for a in needed if a not in verdicts.allowed and a not in verdicts.denied]
    if denied:
        listing = "; ".join(f"{a} ({why})" for a, why in sorted(denied.items()))
        return Check(name, Status.FAIL, f"denied: {listing}", CLI_POLICY_FIX)
    allowed = len([a for a in needed if a in verdicts.allowed])
    if not unknown:
        return Check(name, Status.OK, f"all {len(needed)} actions a launch needs are allowed")
    why = f" ({not_simulated})" if not_simulated else ""
    shown = ", ".join(unknown[:6]) + (f" and {len(unknown) - 6} more" if len(unknown) > 6 else "")
    return Check(name, Status.UNKNOWN,
                 f"{allowed} of {len(needed)} actions a launch needs are allowed (DryRun and reads); "
                 f"not checked: {shown}{why}",
                 "allow iam:SimulatePrincipalPolicy on your own user or role for a complete check")


# --- bundle bucket ---------------------------------------------------------------------------
def bundle_bucket(ctx: Context) -> Check:
    """The bucket a launch uploads the agent bundle to must be in the caller's own account.

    S3 User Guide, "Verifying bucket ownership with bucket owner condition": with
    ``ExpectedBucketOwner`` set, a request to a bucket another account owns fails with 403.
    A 403 can also mean that the caller may not s3:ListBucket its own bucket. An endpoint that
    ignores the condition (moto does) is detected by asking again with an owner that is not ours.
    """
    name = "bundle-bucket"
    if ctx.inputs.agent_bundle and ctx.inputs.agent_bundle.startswith(("https://", "http://")):
        return Check(name, Status.OK, "not used: the agent bundle comes from the --agent-bundle URL")
    if not (ctx.region_usable and ctx.account and ctx.region):
        return _needs(name, "credentials and an enabled region")
    bucket = agent_source.bucket_name(ctx.account, ctx.region)
    s3 = ctx.client("s3", signature_version="s3v4")
    try:
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=ctx.account)
    except Exception as exc:
        code = _code(exc)
        if code in {"404", "NoSuchBucket", "NotFound"}:
            ctx.proven("s3", "HeadBucket")
            return Check(name, Status.OK, f"{bucket} does not exist yet; the first launch creates it "
                                          "in your account")
        if code in {"403", "AccessDenied", "Forbidden"}:
            return Check(name, Status.FAIL,
                         f"{bucket} exists and is owned by another account, or you may not "
                         "s3:ListBucket it", "if the bucket is not yours, pass --agent-bundle https://... "
                         "(a URL you host); otherwise allow s3:ListBucket: " + CLI_POLICY_FIX)
        return Check(name, Status.UNKNOWN, f"HeadBucket {bucket}: {_message(exc)}")
    ctx.proven("s3", "HeadBucket")
    other = "000000000000" if ctx.account != "000000000000" else "111111111111"
    try:
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=other)
    except Exception as exc:
        if _code(exc) in {"403", "AccessDenied", "Forbidden"}:
            return Check(name, Status.OK, f"{bucket} exists and is owned by your account")
        return Check(name, Status.UNKNOWN, f"{bucket} exists; ownership unproven: {_message(exc)}")
    return Check(name, Status.UNKNOWN, f"{bucket} exists, but this S3 endpoint ignores "
                                       "ExpectedBucketOwner, so its owner is unproven")


# --- SSH ---------------------------------------------------------------------------------------
def ssh_key(ctx: Context) -> Check:
    """The key `spawn launch` would use: --key-name, --ssh-key, else ~/.ssh/id_ed25519.pub, id_rsa.pub."""
    name = "ssh-key"
    inputs = ctx.inputs
    if inputs.key_name:
        if not ctx.region_usable:
            return _needs(name, "credentials and an enabled region")
        try:
            keys.require_key_pair(ctx.client("ec2"), inputs.key_name)
        except SpawnError as exc:
            return Check(name, Status.FAIL, exc.message, "pass the name of a key pair of this region "
                         "(`aws ec2 describe-key-pairs`), or --ssh-key PATH")
        ctx.proven("ec2", "DescribeKeyPairs")
        return Check(name, Status.OK, f"key pair {inputs.key_name} exists in {ctx.region}")
    if inputs.ssh_key:
        path = str(Path(inputs.ssh_key).expanduser())
        try:
            public = launch_flags.read_public_key(Path(path))
            keys.fingerprints(public)
        except SpawnError as exc:
            return Check(name, Status.FAIL, exc.message,
                         "pass the .pub file of an ed25519 or RSA key (`ssh-keygen -t ed25519`)")
    else:
        try:
            default = launch_flags.default_public_key(inputs.home)
            if default:
                keys.fingerprints(default[1])
        except SpawnError as exc:
            return Check(name, Status.FAIL, exc.message,
                         "replace the key file or pass --ssh-key PATH to another key")
        if default is None:
            return Check(name, Status.WARN, "no ~/.ssh/id_ed25519.pub or id_rsa.pub: instances get no "
                         "SSH access", "`ssh-keygen -t ed25519`, or pass --ssh-key / --key-name")
        path, public = default
    ctx.public_key = public
    private = Path(path.removesuffix(".pub"))
    where = f"{path} ({public.split()[0]})"
    if not ctx.region_usable:
        return Check(name, Status.UNKNOWN, f"{where}; its key pair in EC2 needs credentials and an "
                                           "enabled region (see above)")
    return _key_pair(ctx, name, where, public, private)


def _key_pair(ctx: Context, name: str, where: str, public: str, private: Path) -> Check:
    ec2 = ctx.client("ec2")
    pair = keys.key_pair_name(public)
    try:
        by_fingerprint = keys.find_key_pair(ec2, public)
        listed = ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [pair]}])["KeyPairs"]
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc, SpawnError) and exc.__cause__ else exc
        return _aws_failure(name, cause, "describing key pairs", "ec2:DescribeKeyPairs")
    ctx.proven("ec2", "DescribeKeyPairs")
    if listed and by_fingerprint != pair:
        # Another key under the name spawn derives from this key: a launch would import nothing
        # and would let that other key in.
        return Check(name, Status.FAIL, f"{where}: key pair {pair} exists in {ctx.region} with a "
                     "different key", f"delete it (`aws ec2 delete-key-pair --key-name {pair} "
                     f"--region {ctx.region}`) unless you know whose key it is")
    state = (f"matches key pair {by_fingerprint}" if by_fingerprint else
             f"the first launch imports it as {pair}")
    if not private.is_file():
        return Check(name, Status.WARN, f"{where}: {state}; no private key at {private}",
                     "keep the private key next to the .pub file: `spawn connect` needs it")
    return Check(name, Status.OK, f"{where}: {state}")


def ssh_from(ctx: Context) -> Check:
    """Who may connect: --ssh-from, else the caller's own public address, looked up as launch does
    (controller.launch.checkip); a failed lookup blocks a launch (it then asks for --ssh-from)."""
    name = "ssh-from"
    if ctx.inputs.ssh_from:
        everyone = [c for c in ctx.inputs.ssh_from if c in launch_flags.EVERYONE]
        if everyone:
            return Check(name, Status.WARN, f"SSH allowed from everyone ({', '.join(everyone)})",
                         "pass --ssh-from YOUR_ADDRESS/32 unless the whole internet should reach port 22")
        return Check(name, Status.OK, f"SSH allowed from {', '.join(ctx.inputs.ssh_from)}")
    if not (ctx.public_key or ctx.inputs.key_name):
        return Check(name, Status.OK, "no SSH key, so no SSH ingress is opened")
    try:
        cidr = checkip.caller_cidr()
    except SpawnError as exc:
        return Check(name, Status.FAIL, exc.message.removeprefix("--ssh-from: "),
                     "pass --ssh-from YOUR_ADDRESS/32")
    return Check(name, Status.OK, f"SSH allowed from your address {cidr} (looked up at {checkip.url()})")


def run_all(inputs: Inputs, on_check: Callable[[Check], None] | None = None) -> list[Check]:
    """Every check, in order (later checks use what earlier ones found). ``on_check`` sees each
    result as soon as it is known."""
    ctx = Context(inputs=inputs)
    resolve_region(ctx)
    results = []
    for check in ORDER:
        result = check(ctx)
        results.append(result)
        if on_check:
            on_check(result)
    return results


ORDER: tuple[Callable[[Context], Check], ...] = (
    credentials, region, network, image, ssh_key, ssh_from, permissions_check, bundle_bucket)
