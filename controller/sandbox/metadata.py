"""What one emulated instance's metadata says, read live from an EC2/IAM/STS endpoint (moto).

``MotoInstance`` is the only part of the emulator that talks to AWS APIs: it describes the
instance (tags, type, placement, metadata options), reads its user data, finds the role behind
its instance profile and assumes that role to hand out real, short-lived credentials.
``metadata_tree`` turns those facts into the IMDS path tree; it is pure apart from the lazy
leaves (credentials) it is handed.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from spored.contract import METADATA_TAG_KEY_RE, format_timestamp

# A node of the metadata tree: a leaf (text or bytes), a directory, or a lazy node computed only
# when its path is asked for (None = "not present", served as 404).
Node = str | bytes | Mapping[str, "NodeOrLazy"]
NodeOrLazy = Node | Callable[[], Node | None] | None

IDENTITY_DOCUMENT_VERSION = "2017-09-30"
# AWS makes new role credentials available at least 5 minutes before the old ones expire.
CREDENTIALS_REFRESH_MARGIN = timedelta(minutes=5)


@dataclass(frozen=True)
class RoleInfo:
    role_name: str
    role_arn: str
    profile_arn: str
    profile_id: str


@dataclass(frozen=True)
class RoleCredentials:
    access_key_id: str
    secret_access_key: str
    token: str
    expiration: datetime
    last_updated: datetime

    def document(self) -> str:
        return json.dumps({
            "Code": "Success",
            "LastUpdated": format_timestamp(self.last_updated),
            "Type": "AWS-HMAC",
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "Token": self.token,
            "Expiration": format_timestamp(self.expiration),
        }, indent=2)


class MotoInstance:
    """One instance as the EC2/IAM/STS endpoint at ``aws_endpoint`` knows it.

    ``aws_endpoint=None`` lets boto3 pick the endpoint itself (``AWS_ENDPOINT_URL`` or AWS).
    The emulator's own calls use whatever credentials the environment (or ``session``) has.
    """

    def __init__(self, instance_id: str, region: str, aws_endpoint: str | None, *,
                 role_name: str | None = None, session: Any = None,
                 credentials_duration: int = 3600) -> None:
        import boto3

        self.instance_id = instance_id
        self.region = region
        self._session: Any = session or boto3.session.Session()
        self._explicit_role = role_name
        self._credentials_duration = credentials_duration
        self._lock = threading.Lock()
        self._refresh = threading.Lock()  # one AssumeRole at a time, not one per waiting request
        self._clients: dict[str, Any] = {}
        self._endpoint = aws_endpoint
        self._role: RoleInfo | None = None
        self._credentials: RoleCredentials | None = None

    def _client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                from botocore.config import Config

                config = Config(retries={"mode": "standard", "max_attempts": 3},
                                connect_timeout=2, read_timeout=10)
                self._clients[service] = self._session.client(
                    service, region_name=self.region, endpoint_url=self._endpoint, config=config)
            return self._clients[service]

    def describe(self) -> dict[str, Any]:
        """The instance from DescribeInstances, with its reservation's OwnerId and ReservationId."""
        resp = self._client("ec2").describe_instances(InstanceIds=[self.instance_id])
        for reservation in resp.get("Reservations", []):
            for inst in reservation.get("Instances", []):
                if inst.get("InstanceId") == self.instance_id:
                    return dict(inst, OwnerId=reservation.get("OwnerId", ""),
                                ReservationId=reservation.get("ReservationId", ""))
        raise LookupError(f"instance {self.instance_id} not found in {self.region}")

    def user_data(self) -> bytes | None:
        resp = self._client("ec2").describe_instance_attribute(
            InstanceId=self.instance_id, Attribute="userData")
        value = (resp.get("UserData") or {}).get("Value")
        return base64.b64decode(value) if value else None

    def role(self, instance: dict[str, Any]) -> RoleInfo | None:
        """The role behind the instance profile (cached per profile ARN)."""
        profile = instance.get("IamInstanceProfile") or {}
        profile_arn = str(profile.get("Arn", ""))
        if not profile_arn:
            return None
        with self._lock:
            cached = self._role
        if cached is not None and cached.profile_arn == profile_arn:
            return cached
        iam = self._client("iam")
        if self._explicit_role:
            role = iam.get_role(RoleName=self._explicit_role)["Role"]
        else:
            name = profile_arn.rsplit("/", 1)[-1]
            roles = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]
            if not roles:
                return None
            role = roles[0]
        info = RoleInfo(role_name=role["RoleName"], role_arn=role["Arn"], profile_arn=profile_arn,
                        profile_id=str(profile.get("Id", "")))
        with self._lock:
            self._role = info
            self._credentials = None
        return info

    def credentials(self, role: RoleInfo) -> RoleCredentials:
        """Real credentials for ``role`` from sts:AssumeRole, reused until close to expiry."""
        with self._refresh:
            with self._lock:
                creds = self._credentials
            now = datetime.now(UTC)
            if creds is not None and creds.expiration - now > CREDENTIALS_REFRESH_MARGIN:
                return creds
            return self._assume(role, now)

    def _assume(self, role: RoleInfo, now: datetime) -> RoleCredentials:
        resp = self._client("sts").assume_role(
            RoleArn=role.role_arn, RoleSessionName=self.instance_id,
            DurationSeconds=self._credentials_duration)["Credentials"]
        creds = RoleCredentials(
            access_key_id=resp["AccessKeyId"], secret_access_key=resp["SecretAccessKey"],
            token=resp["SessionToken"], expiration=resp["Expiration"].astimezone(UTC),
            last_updated=now)
        with self._lock:
            self._credentials = creds
        return creds


@dataclass(frozen=True)
class Notices:
    """Armed spot interruption / rebalance notices (None = no notice: 404)."""

    spot_action: str | None = None
    spot_time: datetime | None = None
    rebalance_time: datetime | None = None


def exposed_tags(tags: list[dict[str, str]]) -> dict[str, str]:
    """Tags IMDS exposes: keys made only of ``[0-9a-zA-Z-_+=,.@:]``."""
    return {t["Key"]: t.get("Value", "") for t in tags if METADATA_TAG_KEY_RE.match(t.get("Key", ""))}


def identity_document(instance: dict[str, Any], region: str) -> str:
    placement = instance.get("Placement") or {}
    launch = instance.get("LaunchTime")
    return json.dumps({
        "accountId": instance.get("OwnerId", ""),
        "architecture": instance.get("Architecture", "x86_64"),
        "availabilityZone": placement.get("AvailabilityZone", ""),
        "billingProducts": None,
        "devpayProductCodes": None,
        "marketplaceProductCodes": None,
        "imageId": instance.get("ImageId", ""),
        "instanceId": instance.get("InstanceId", ""),
        "instanceType": instance.get("InstanceType", ""),
        "kernelId": None,
        "pendingTime": format_timestamp(launch) if isinstance(launch, datetime) else None,
        "privateIp": instance.get("PrivateIpAddress"),
        "ramdiskId": None,
        "region": region,
        "version": IDENTITY_DOCUMENT_VERSION,
    }, indent=2)


def _present(**entries: NodeOrLazy) -> dict[str, NodeOrLazy]:
    return {k.replace("_", "-"): v for k, v in entries.items() if v is not None}


class MergedDir(Mapping[str, NodeOrLazy]):
    """A directory whose ``known`` entries need nothing, and whose ``rest`` is computed only when
    a path outside ``known`` (or the listing) is asked for: spot and rebalance notices are served
    without a call to EC2, as on AWS where they don't depend on the EC2 API either."""

    def __init__(self, known: dict[str, NodeOrLazy], rest: Callable[[], dict[str, NodeOrLazy]]) -> None:
        self._known = known
        self._rest = rest
        self._computed: dict[str, NodeOrLazy] | None = None

    def _all(self) -> dict[str, NodeOrLazy]:
        if self._computed is None:
            self._computed = {**self._rest(), **self._known}
        return self._computed

    def __getitem__(self, key: str) -> NodeOrLazy:
        if key in self._known:
            return self._known[key]
        return self._all()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def notice_tree(notices: Notices) -> dict[str, NodeOrLazy]:
    """``events/`` and, once armed, ``spot/``: the parts of meta-data that need no EC2 call."""
    events: dict[str, NodeOrLazy] = {"maintenance": {"scheduled": "[]", "history": "[]"}}
    if notices.rebalance_time is not None:
        events["recommendations"] = {
            "rebalance": json.dumps({"noticeTime": format_timestamp(notices.rebalance_time)})}
    tree: dict[str, NodeOrLazy] = {"events": events}
    if notices.spot_action is not None and notices.spot_time is not None:
        when = format_timestamp(notices.spot_time)
        tree["spot"] = {
            "instance-action": json.dumps({"action": notices.spot_action, "time": when}),
            "termination-time": when,
        }
    return tree


def instance_tree(instance: dict[str, Any], *, region: str, tags_in_metadata: bool,
                  role: RoleInfo | None,
                  credentials: Callable[[], RoleCredentials]) -> dict[str, NodeOrLazy]:
    """The rest of ``/latest/meta-data/`` for ``instance`` (a DescribeInstances entry)."""
    placement = instance.get("Placement") or {}
    nics = instance.get("NetworkInterfaces") or [{}]
    groups = instance.get("SecurityGroups") or nics[0].get("Groups") or []
    tree = _present(
        ami_id=instance.get("ImageId"),
        ami_launch_index=str(instance.get("AmiLaunchIndex", 0)),
        hostname=instance.get("PrivateDnsName"),
        local_hostname=instance.get("PrivateDnsName"),
        local_ipv4=instance.get("PrivateIpAddress"),
        public_hostname=instance.get("PublicDnsName") or None,
        public_ipv4=instance.get("PublicIpAddress"),
        instance_id=instance.get("InstanceId"),
        instance_type=instance.get("InstanceType"),
        instance_life_cycle=instance.get("InstanceLifecycle") or "on-demand",
        mac=nics[0].get("MacAddress"),
        reservation_id=instance.get("ReservationId"),
        security_groups="\n".join(g.get("GroupName", "") for g in groups) or None,
        placement=_present(availability_zone=placement.get("AvailabilityZone"), region=region),
    )
    if role is not None:
        tree["iam"] = {
            "info": lambda: json.dumps({
                "Code": "Success",
                "LastUpdated": format_timestamp(credentials().last_updated),
                "InstanceProfileArn": role.profile_arn,
                "InstanceProfileId": role.profile_id,
            }, indent=2),
            "security-credentials": {role.role_name: lambda: credentials().document()},
        }
    if tags_in_metadata:
        keys: dict[str, NodeOrLazy] = dict(exposed_tags(instance.get("Tags") or []))
        tree["tags"] = {"instance": keys}
    return tree


def spot_time_default() -> datetime:
    """AWS gives two minutes' notice."""
    return datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=2)
