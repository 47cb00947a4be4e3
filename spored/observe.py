"""Raw instance metadata -> typed observations.

Every reader returns a value, ``None`` for "not present" (a 404: no spot notice, tags not exposed
in metadata), or an explicit ``Unknown`` carrying why. None of them raises into the loop.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from spored.contract import AGENT_WRITABLE_TAGS, METADATA_TAG_KEY_RE, TAG_PREFIX
from spored.imds_errors import ImdsError

if TYPE_CHECKING:
    from spored.imds_client import ImdsClient

SPOT_PATH = "meta-data/spot/instance-action"
REBALANCE_PATH = "meta-data/events/recommendations/rebalance"
LIFE_CYCLE_PATH = "meta-data/instance-life-cycle"


@dataclass(frozen=True)
class Unknown:
    """A reading we could not get. Never a reason to terminate anything."""

    why: str

    def __str__(self) -> str:
        return f"unknown ({self.why})"


@dataclass(frozen=True)
class Identity:
    instance_id: str
    region: str
    account_id: str
    instance_type: str
    # Last launch or start of the instance (the identity document's pendingTime).
    launch_time: datetime


@dataclass(frozen=True)
class Notice:
    """A spot interruption (``kind="spot"``) or a rebalance recommendation (``"rebalance"``)."""

    kind: str
    action: str
    time: datetime
    # De-duplication key: a hash of the raw payload.
    key: str


def _parse_aws_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _digest(kind: str, body: str) -> str:
    return f"{kind}-{hashlib.sha256(body.strip().encode()).hexdigest()[:16]}"


def parse_identity(body: str) -> Identity:
    doc: dict[str, Any] = json.loads(body)
    instance_id = str(doc["instanceId"])
    if not instance_id.startswith("i-"):
        raise ValueError(f"instanceId {instance_id!r} is not an instance id")
    return Identity(
        instance_id=instance_id,
        region=str(doc["region"]),
        account_id=str(doc.get("accountId", "")),
        instance_type=str(doc.get("instanceType", "")),
        launch_time=_parse_aws_time(str(doc["pendingTime"])),
    )


def parse_spot(body: str) -> Notice:
    doc = json.loads(body)
    return Notice(kind="spot", action=str(doc["action"]), time=_parse_aws_time(str(doc["time"])),
                  key=_digest("spot", body))


def parse_rebalance(body: str) -> Notice:
    doc = json.loads(body)
    return Notice(kind="rebalance", action="rebalance", time=_parse_aws_time(str(doc["noticeTime"])),
                  key=_digest("rebalance", body))


def read_identity(imds: ImdsClient) -> Identity | Unknown:
    try:
        body = imds.get("dynamic/instance-identity/document")
    except ImdsError as exc:
        return Unknown(f"identity document: {exc}")
    if body is None:
        return Unknown("identity document: absent")
    try:
        return parse_identity(body)
    except (ValueError, KeyError, TypeError) as exc:
        return Unknown(f"identity document unreadable: {exc}")


def read_notice(imds: ImdsClient, kind: str) -> Notice | Unknown | None:
    path = SPOT_PATH if kind == "spot" else REBALANCE_PATH
    try:
        body = imds.get(path)
    except ImdsError as exc:
        return Unknown(f"{kind} notice: {exc}")
    if body is None:
        return None
    try:
        return parse_spot(body) if kind == "spot" else parse_rebalance(body)
    except (ValueError, KeyError, TypeError) as exc:
        return Unknown(f"{kind} notice unreadable: {exc}")


def read_life_cycle(imds: ImdsClient) -> str | Unknown:
    """The purchasing option (``meta-data/instance-life-cycle``): ``spot``, ``on-demand``, ..."""
    try:
        body = imds.get(LIFE_CYCLE_PATH)
    except ImdsError as exc:
        return Unknown(f"instance-life-cycle: {exc}")
    value = (body or "").strip()
    return value if value else Unknown("instance-life-cycle: absent")


def needs_notice_poll(life_cycle: str | Unknown) -> bool:
    """Spot interruption notices and rebalance recommendations are sent to Spot Instances only
    (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html,
    https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/rebalance-recommendations.html: "a signal
    that notifies you when a Spot Instance is at elevated risk of interruption"). The purchasing
    option is ``meta-data/instance-life-cycle``
    (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-categories.html).
    Unknown: poll, so a notice is never missed because metadata was briefly unreadable."""
    return isinstance(life_cycle, Unknown) or life_cycle == "spot"


def read_metadata_tags(imds: ImdsClient) -> dict[str, str] | Unknown | None:
    """The ``spawn:`` instance tags from ``meta-data/tags/instance``; None when the launch did not
    expose tags. Other tags (Name, the user's own) and the ones the agent writes itself are listed
    but not read: one request each, and the agent uses none of them."""
    try:
        listing = imds.get("meta-data/tags/instance")
        if listing is None:
            return None
        tags: dict[str, str] = {}
        for key in (line.strip() for line in listing.splitlines()):
            if not key.startswith(TAG_PREFIX) or key in AGENT_WRITABLE_TAGS \
                    or not METADATA_TAG_KEY_RE.match(key):
                continue
            value = imds.get(f"meta-data/tags/instance/{key}")
            if value is not None:
                tags[key] = value
        return tags
    except ImdsError as exc:
        return Unknown(f"tags in metadata: {exc}")
