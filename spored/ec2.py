"""The agent's EC2 adapter: the only module that talks to the EC2 API.

boto3 is imported lazily, on the first call that needs it: with tags in instance metadata the
steady state makes no EC2 call and never loads boto3. Credentials come from boto3's normal chain
(on an instance: the instance profile through IMDS, found via AWS_EC2_METADATA_SERVICE_ENDPOINT);
the endpoint from ``endpoint`` or AWS_ENDPOINT_URL (boto3 reads it itself). botocore's retry mode
is ``adaptive`` (client-side rate limiting for fleets) unless AWS_RETRY_MODE says otherwise.

Every call is logged as the structured event ``aws.call`` with service and operation, and each
operation declares the IAM action it needs in ``PERMISSIONS`` (the agent's policy must allow
exactly these).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from spored import __version__, logs
from spored.contract import TAG_AGENT_STATUS
from spored.errors import SpawnError, aws_error_code, aws_error_kind, from_aws, is_aws_exception

log = logs.get("spored.ec2")

# Operation -> IAM action. Describe calls have no resource-level permissions; the destructive ones
# are limited by the agent policy to its own instance and spawn:managed=true.
PERMISSIONS: dict[str, str] = {
    "DescribeTags": "ec2:DescribeTags",
    "TerminateInstances": "ec2:TerminateInstances",
    "StopInstances": "ec2:StopInstances",
    "CreateTags": "ec2:CreateTags",
}

_CREDENTIAL_FAILURES = frozenset({"NoCredentialsError", "CredentialRetrievalError",
                                  "PartialCredentialsError"})
HIBERNATE_REFUSED_CODES = frozenset({"UnsupportedHibernationConfiguration", "UnsupportedOperation",
                                     "IncorrectInstanceState", "InvalidParameterCombination"})


class Ec2CallError(Exception):
    """A failed EC2 call. ``kind``: denied | unreachable | error; ``code`` the AWS error code."""

    def __init__(self, operation: str, kind: str, code: str, error: SpawnError) -> None:
        super().__init__(error.message)
        self.operation = operation
        self.kind = kind
        self.code = code


class Ec2:
    def __init__(self, region: str, endpoint: str = "") -> None:
        self.region = region
        self.endpoint = endpoint
        self._client: Any = None
        self._session: Any = None
        self._lock = threading.Lock()
        self.calls = 0

    def warm(self) -> None:
        """Import boto3, build the client and resolve credentials now, so a due action is fast.

        Called when an action is near; never in the steady state. Failures surface on the call.
        """
        with self._lock:
            self._build()
            try:
                self._session.get_credentials().get_frozen_credentials()
            except Exception as exc:  # credentials unavailable yet: the real call reports it
                log.info("aws.warm_failed", error=type(exc).__name__)

    def _ec2(self) -> Any:
        with self._lock:
            return self._build()

    def _build(self) -> Any:
        if self._client is None:
            import boto3
            import botocore.session
            from botocore.config import Config

            mode = os.environ.get("AWS_RETRY_MODE", "adaptive")
            retries: Any = {"mode": mode if mode in ("standard", "adaptive") else "adaptive",
                            "max_attempts": 3}
            config = Config(
                retries=retries,
                user_agent_extra=f"spored/{__version__}",
                # Worst case per call ~30 s, well inside the unit's WatchdogSec=90.
                connect_timeout=3,
                read_timeout=5,
            )
            kwargs: dict[str, Any] = {"region_name": self.region, "config": config}
            if self.endpoint:
                kwargs["endpoint_url"] = self.endpoint
            core = botocore.session.Session()
            # IMDS role credentials may not be ready at boot: give botocore's fetcher more than
            # its default single 1 s attempt, unless the environment already says otherwise.
            for variable, value in (("metadata_service_num_attempts", 3),
                                    ("metadata_service_timeout", 2)):
                if f"AWS_{variable.upper()}" not in os.environ:
                    core.set_config_variable(variable, value)
            self._session = boto3.session.Session(botocore_session=core)
            self._client = self._session.client("ec2", **kwargs)
        return self._client

    def _forget_client(self) -> None:
        """Drop the client so the next call resolves credentials again.

        botocore resolves credentials once, when the client is built: a client built before the
        instance profile's credentials were available would fail every later call.
        """
        with self._lock:
            self._client = None
            self._session = None

    def _call(self, operation: str, method: str, **params: Any) -> Any:
        self.calls += 1
        dry_run = bool(params.get("DryRun"))
        log.info("aws.call", service="ec2", operation=operation, permission=PERMISSIONS[operation],
                 instance_id=(params.get("InstanceIds") or params.get("Resources") or [None])[0],
                 **({"dry_run": True} if dry_run else {}))
        try:
            return getattr(self._ec2(), method)(**params)
        except Exception as exc:  # botocore's errors, translated at this one boundary
            if not is_aws_exception(exc):
                raise
            error = from_aws(exc, action=f"ec2:{operation}")
            code = aws_error_code(exc)
            kind = aws_error_kind(exc)
            if kind == "not-found":
                kind = "error"
            if code in _CREDENTIAL_FAILURES:
                self._forget_client()
            if not (dry_run and code == "DryRunOperation"):  # DryRun's "allowed" is an error too
                log.warning("aws.error", service="ec2", operation=operation, code=code, kind=kind,
                            message=error.message)
            raise Ec2CallError(operation, kind, code, error) from None

    def describe_tags(self, instance_id: str) -> dict[str, str]:
        tags: dict[str, str] = {}
        params: dict[str, Any] = {"Filters": [{"Name": "resource-id", "Values": [instance_id]}],
                                  "MaxResults": 1000}
        while True:
            page = self._call("DescribeTags", "describe_tags", **params)
            for item in page.get("Tags", []):
                if item.get("ResourceId") == instance_id:
                    tags[str(item["Key"])] = str(item.get("Value", ""))
            token = page.get("NextToken")
            if not token:
                return tags
            params["NextToken"] = token

    def create_tags(self, instance_id: str, tags: dict[str, str]) -> None:
        """Only spawn:agent-status on the agent's own instance (the policy allows nothing else)."""
        self._call("CreateTags", "create_tags", Resources=[instance_id],
                   Tags=[{"Key": k, "Value": v} for k, v in tags.items()])

    def terminate(self, instance_id: str) -> None:
        self._call("TerminateInstances", "terminate_instances", InstanceIds=[instance_id])

    def stop(self, instance_id: str, *, hibernate: bool = False) -> None:
        self._call("StopInstances", "stop_instances", InstanceIds=[instance_id], Hibernate=hibernate)

    def dry_run(self, operation: str, instance_id: str, *, hibernate: bool = False) -> str:
        """The error code EC2 answers a ``DryRun=True`` call with on our own instance:
        ``DryRunOperation`` (allowed), ``UnauthorizedOperation`` (denied) or anything else
        (inconclusive). Never changes anything."""
        params: dict[str, Any]
        if operation == "CreateTags":
            params = {"Resources": [instance_id], "Tags": [{"Key": TAG_AGENT_STATUS, "Value": "ready"}]}
        elif operation == "StopInstances":
            params = {"InstanceIds": [instance_id], "Hibernate": hibernate}
        elif operation == "TerminateInstances":
            params = {"InstanceIds": [instance_id]}
        else:
            raise ValueError(f"no DryRun check for {operation}")
        method = {"CreateTags": "create_tags", "StopInstances": "stop_instances",
                  "TerminateInstances": "terminate_instances"}[operation]
        try:
            self._call(operation, method, DryRun=True, **params)
        except Ec2CallError as exc:
            return exc.code
        return "NoDryRunAnswer"
