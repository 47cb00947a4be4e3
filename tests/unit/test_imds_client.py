"""The IMDSv2 chokepoint against a fake metadata service (``responses``)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import requests
import responses

from spored import logs
from spored.imds_client import ImdsClient, endpoint_from_env
from spored.imds_errors import ImdsDisabled, ImdsUnavailable
from spored.observe import (
    Identity,
    Notice,
    Unknown,
    needs_notice_poll,
    read_identity,
    read_life_cycle,
    read_metadata_tags,
    read_notice,
)

BASE = "http://imds.test"
TOKEN_URL = f"{BASE}/latest/api/token"
SECRET = "AQAEAFakeTokenValue-never-log-me=="


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# each test logs into its own buffer (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("agent_logs")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure(json=True, stream=stream, level="debug")
    yield stream
    logs.configure(json=True, stream=io.StringIO())


def client(clock: Clock, **kw: float) -> ImdsClient:
    return ImdsClient(BASE, clock=clock, **kw)  # type: ignore[arg-type]


def token_ok(ttl: int = 21600) -> None:
    responses.put(TOKEN_URL, body=SECRET, headers={"X-aws-ec2-metadata-token-ttl-seconds": str(ttl)})


def puts() -> int:
    return sum(1 for c in responses.calls if c.request.method == "PUT")


@responses.activate
def test_token_cached_and_sent(clock: Clock) -> None:
    token_ok()
    responses.get(f"{BASE}/latest/meta-data/instance-id", body="i-0abc",
                  match=[responses.matchers.header_matcher({"X-aws-ec2-metadata-token": SECRET})])
    c = client(clock)
    assert [c.get("meta-data/instance-id") for _ in range(3)] == ["i-0abc"] * 3
    assert puts() == 1
    put = responses.calls[0].request
    assert put.headers["X-aws-ec2-metadata-token-ttl-seconds"] == "21600"


@responses.activate
def test_token_refreshed_before_it_expires(clock: Clock) -> None:
    token_ok(ttl=100)
    responses.get(f"{BASE}/latest/meta-data/x", body="v")
    c = client(clock, token_ttl=100, refresh_margin=15)
    c.get("meta-data/x")
    clock.now += 80
    c.get("meta-data/x")
    assert puts() == 1
    clock.now += 6  # 14 s left: inside the margin
    c.get("meta-data/x")
    assert puts() == 2


@responses.activate
def test_401_refetches_token_once(clock: Clock) -> None:
    token_ok()
    responses.get(f"{BASE}/latest/meta-data/x", status=401)
    responses.get(f"{BASE}/latest/meta-data/x", body="v")
    assert client(clock).get("meta-data/x") == "v"
    assert puts() == 2


@responses.activate
def test_401_twice_is_an_error_not_a_loop(clock: Clock) -> None:
    token_ok()
    responses.get(f"{BASE}/latest/meta-data/x", status=401)
    with pytest.raises(ImdsUnavailable):
        client(clock).get("meta-data/x")
    assert puts() == 2
    assert len(responses.calls) == 4


@responses.activate
def test_403_on_token_is_disabled_and_not_hammered(clock: Clock) -> None:
    responses.put(TOKEN_URL, status=403)
    c = client(clock, disabled_backoff=60)
    with pytest.raises(ImdsDisabled):
        c.get("meta-data/x")
    for _ in range(5):
        with pytest.raises(ImdsDisabled):
            c.get("meta-data/x")
    assert len(responses.calls) == 1
    clock.now += 61
    with pytest.raises(ImdsDisabled):
        c.get("meta-data/x")
    assert len(responses.calls) == 2


@responses.activate
def test_404_is_absent(clock: Clock) -> None:
    token_ok()
    responses.get(f"{BASE}/latest/meta-data/spot/instance-action", status=404)
    assert client(clock).get("meta-data/spot/instance-action") is None


@responses.activate
def test_503_honours_retry_after(clock: Clock) -> None:
    token_ok()
    responses.get(f"{BASE}/latest/meta-data/x", status=503, headers={"Retry-After": "5"})
    responses.get(f"{BASE}/latest/meta-data/x", body="v")
    c = client(clock)
    with pytest.raises(ImdsUnavailable) as info:
        c.get("meta-data/x")
    assert info.value.retry_after == 5
    clock.now += 3
    with pytest.raises(ImdsUnavailable):
        c.get("meta-data/x")
    assert len(responses.calls) == 2  # nothing sent while waiting
    clock.now += 3
    assert c.get("meta-data/x") == "v"


@responses.activate
def test_timeout_is_unavailable(clock: Clock) -> None:
    token_ok()
    responses.get(f"{BASE}/latest/meta-data/x", body=requests.exceptions.ReadTimeout("slow"))
    with pytest.raises(ImdsUnavailable):
        client(clock).get("meta-data/x")


@responses.activate
def test_unreachable_token_endpoint_is_unavailable(clock: Clock) -> None:
    responses.put(TOKEN_URL, body=requests.exceptions.ConnectionError("refused"))
    with pytest.raises(ImdsUnavailable):
        client(clock).get("meta-data/x")


@responses.activate
def test_token_never_logged(clock: Clock, captured: io.StringIO) -> None:
    token_ok(ttl=100)
    responses.get(f"{BASE}/latest/meta-data/x", status=401)
    responses.get(f"{BASE}/latest/meta-data/x", status=503, headers={"Retry-After": "1"})
    c = client(clock, token_ttl=100)
    with pytest.raises(ImdsUnavailable) as info:
        c.get("meta-data/x")
    assert SECRET not in str(info.value)
    text = captured.getvalue()
    assert "imds.token" in text and "imds.throttled" in text  # it did log
    assert SECRET not in text


def test_endpoint_from_config_env_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", raising=False)
    assert endpoint_from_env() == "http://169.254.169.254"
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9/")
    assert endpoint_from_env() == "http://127.0.0.1:9"
    assert endpoint_from_env("http://10.0.0.1") == "http://10.0.0.1"


# -- observations on top of the client ------------------------------------------------------------
IDENTITY = ('{"instanceId": "i-0abc", "region": "eu-west-1", "accountId": "123456789012", '
            '"instanceType": "t3.micro", "pendingTime": "2026-11-28T12:00:00Z"}')


@responses.activate
def test_identity_document(clock: Clock) -> None:
    token_ok()
    responses.get(f"{BASE}/latest/dynamic/instance-identity/document", body=IDENTITY)
    ident = read_identity(client(clock))
    assert isinstance(ident, Identity)
    assert (ident.instance_id, ident.region, ident.launch_time.isoformat()) == (
        "i-0abc", "eu-west-1", "2026-11-28T12:00:00+00:00")


@responses.activate
def test_garbage_identity_is_unknown(clock: Clock) -> None:
    token_ok()
    responses.get(f"{BASE}/latest/dynamic/instance-identity/document", body="<html>")
    assert isinstance(read_identity(client(clock)), Unknown)


@responses.activate
def test_tags_from_metadata_and_absent(clock: Clock) -> None:
    token_ok()
    responses.get(f"{BASE}/latest/meta-data/tags/instance", body="spawn:managed\nspawn:ttl")
    responses.get(f"{BASE}/latest/meta-data/tags/instance/spawn:managed", body="true")
    responses.get(f"{BASE}/latest/meta-data/tags/instance/spawn:ttl", body="2h")
    assert read_metadata_tags(client(clock)) == {"spawn:managed": "true", "spawn:ttl": "2h"}


@responses.activate
def test_only_the_spawn_tags_the_agent_uses_are_read(clock: Clock) -> None:
    """One metadata request per value read: Name, the user's own tags and the agent's own status
    tag are listed but never fetched (an unregistered URL would make the read Unknown)."""
    token_ok()
    responses.get(f"{BASE}/latest/meta-data/tags/instance",
                  body="Name\nProject\nspawn:managed\nspawn:agent-status\nspawn:ttl")
    responses.get(f"{BASE}/latest/meta-data/tags/instance/spawn:managed", body="true")
    responses.get(f"{BASE}/latest/meta-data/tags/instance/spawn:ttl", body="2h")
    assert read_metadata_tags(client(clock)) == {"spawn:managed": "true", "spawn:ttl": "2h"}
    assert [c.request.method for c in responses.calls] == ["PUT", "GET", "GET", "GET"]


@responses.activate
def test_life_cycle_decides_the_notice_poll(clock: Clock) -> None:
    token_ok()
    responses.get(f"{BASE}/latest/meta-data/instance-life-cycle", body="on-demand")
    assert read_life_cycle(client(clock)) == "on-demand"
    assert needs_notice_poll("spot") and not needs_notice_poll("on-demand")
    assert not needs_notice_poll("scheduled")
    assert needs_notice_poll(Unknown("timeout"))  # unreadable: poll rather than miss a notice


@responses.activate
def test_unreadable_life_cycle_is_unknown(clock: Clock) -> None:
    token_ok()
    responses.get(f"{BASE}/latest/meta-data/instance-life-cycle", status=404)
    assert isinstance(read_life_cycle(client(clock)), Unknown)


@responses.activate
def test_tags_not_in_metadata_is_none(clock: Clock) -> None:
    token_ok()
    responses.get(f"{BASE}/latest/meta-data/tags/instance", status=404)
    assert read_metadata_tags(client(clock)) is None


@responses.activate
def test_spot_notice_and_dedup_key(clock: Clock) -> None:
    token_ok()
    body = '{"action": "terminate", "time": "2026-11-28T12:02:00Z"}'
    responses.get(f"{BASE}/latest/meta-data/spot/instance-action", body=body)
    responses.get(f"{BASE}/latest/meta-data/events/recommendations/rebalance", status=404)
    c = client(clock)
    first, second = read_notice(c, "spot"), read_notice(c, "spot")
    assert isinstance(first, Notice) and isinstance(second, Notice)
    assert first.key == second.key and first.action == "terminate"
    assert read_notice(c, "rebalance") is None
