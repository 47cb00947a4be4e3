"""IAM users for the tests that run `spawn` as someone other than the moto server's admin."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from controller import aws as controller_aws
from tests.conftest import MotoServer


def iam_user(document: dict[str, Any], name: str) -> dict[str, str]:
    """A new IAM user ``name`` with ``document`` attached as a managed policy; its access keys as
    environment variables. Made as the moto server's admin (the environment's credentials)."""
    iam = boto3.client("iam")
    iam.create_user(UserName=name)
    arn = iam.create_policy(PolicyName=f"{name}-policy", PolicyDocument=json.dumps(document))["Policy"]["Arn"]
    iam.attach_user_policy(UserName=name, PolicyArn=arn)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def become(monkeypatch: pytest.MonkeyPatch, keys: dict[str, str], *,
           enforcing: MotoServer | None = None) -> None:
    """From now on the controller calls AWS with ``keys``; with ``enforcing``, that server checks
    IAM (actions only: see the shared notes on moto)."""
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    controller_aws.session.cache_clear()
    if enforcing is not None:
        enforcing.enforce_iam(True)
