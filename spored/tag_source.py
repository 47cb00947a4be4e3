"""Where the agent learns what its instance is and how it is tagged.

The identity document names the instance and its region. The ``spawn:`` tags come from instance
metadata when the launch exposed them there; otherwise from EC2 ``DescribeTags`` on the agent's
own instance id, through a client built only then (boto3 is loaded only when it is needed). A
refused or failed DescribeTags backs off from ``API_RETRY_MIN`` seconds up to the API refresh
interval: never a call on every tick.
"""

from __future__ import annotations

import time
from datetime import datetime

from spored import logs
from spored.backoff import next_delay
from spored.config import Config
from spored.contract import AGENT_WRITABLE_TAGS, is_managed
from spored.ec2 import Ec2, Ec2CallError
from spored.imds_client import ImdsClient
from spored.observe import Identity, Unknown, read_identity, read_metadata_tags

# Failed DescribeTags calls back off from this many seconds.
API_RETRY_MIN = 30.0

log = logs.get("spored.tag_source")

Tags = dict[str, str] | Unknown


def _others(tags: dict[str, str]) -> dict[str, str]:
    """Tags without the ones the agent writes itself."""
    return {k: v for k, v in tags.items() if k not in AGENT_WRITABLE_TAGS}


class TagSource:
    def __init__(self, imds: ImdsClient, config: Config) -> None:
        self.imds = imds
        self.config = config
        self.identity: Identity | Unknown = Unknown("not read yet")
        self.tags: Tags = Unknown("not read yet")
        self.source = "none"  # metadata | api | none
        self.last_refresh: datetime | None = None
        self._ec2: Ec2 | None = None
        self._backoff = 0.0
        self._retry_at = 0.0

    def ec2(self) -> Ec2 | None:
        """The EC2 client for the instance's region; None while the identity is unknown."""
        if isinstance(self.identity, Unknown):
            return None
        if self._ec2 is None or self._ec2.region != self.identity.region:
            self._ec2 = Ec2(self.identity.region, self.config.ec2_endpoint)
        return self._ec2

    def refresh_identity(self) -> None:
        """Read the identity document; a failed read keeps a known identity."""
        identity = read_identity(self.imds)
        if isinstance(identity, Identity) or isinstance(self.identity, Unknown):
            self.identity = identity
        if isinstance(identity, Unknown):
            log.warning("identity.unknown", why=identity.why)

    def read(self) -> tuple[Tags, str, Ec2CallError | None]:
        """Fresh tags: instance metadata when exposed, else DescribeTags on our own instance id.
        Changes nothing."""
        tags = read_metadata_tags(self.imds)
        if tags is not None:
            return tags, "metadata", None
        ec2 = self.ec2()
        if ec2 is None or isinstance(self.identity, Unknown):
            return Unknown("tags not in metadata and identity unknown"), "api", None
        try:
            return ec2.describe_tags(self.identity.instance_id), "api", None
        except Ec2CallError as exc:
            return Unknown(f"DescribeTags: {exc.code}"), "api", exc

    def accept(self, tags: dict[str, str], source: str, now: datetime) -> None:
        """Tags read right now (``read``) become the current ones."""
        self.tags, self.source, self.last_refresh = tags, source, now

    def refresh(self, now: datetime) -> str | None:
        """Read the tags and keep them; on failure keep the Unknown and return why."""
        tags, source, error = self.read()
        self.source = source
        if isinstance(tags, Unknown):
            if error is not None:  # EC2 refused or throttled: back off (never a call per tick)
                self._backoff = next_delay(self._backoff, API_RETRY_MIN,
                                           self.config.tag_refresh_api.total_seconds())
                self._retry_at = time.monotonic() + self._backoff
            log.warning("tags.unknown", why=tags.why, source=source)
            self.tags = tags
            return str(tags)
        self._backoff = 0.0
        previous = self.tags
        # The agent's own status tag is not news: only a change the agent did not write is logged.
        changed = not isinstance(previous, dict) or _others(tags) != _others(previous)
        self.accept(tags, source, now)
        if changed:
            log.info("tags.changed", source=source, managed=is_managed(tags),
                     lifecycle={k: v for k, v in tags.items() if k.startswith("spawn:")})
        return None

    def retry_due(self) -> bool:
        """Unknown tags may be read again now (the back-off after a failed API call is over)."""
        return isinstance(self.tags, Unknown) and time.monotonic() >= self._retry_at

    def refresh_interval(self) -> float:
        """Seconds between planned refreshes: ``tag_refresh`` from metadata, else
        ``tag_refresh_api``."""
        interval = self.config.tag_refresh if self.source == "metadata" else self.config.tag_refresh_api
        return interval.total_seconds()
