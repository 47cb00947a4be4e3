"""The caller's public address for the default SSH ingress: AWS's checkip service, answered here
by `responses` (no test reaches the internet)."""

from __future__ import annotations

import pytest
import requests
import responses

from controller.launch import checkip
from spored.errors import ValidationError

URL = "https://checkip.test/"


@responses.activate
def test_the_answer_becomes_a_32() -> None:
    responses.get(URL, body="203.0.113.7\n")
    assert checkip.caller_cidr(URL) == "203.0.113.7/32"
    assert responses.calls[0].request.headers["User-Agent"].startswith("spawn")


@responses.activate
def test_default_endpoint_is_aws_checkip_and_the_env_overrides_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(checkip.ENV, raising=False)
    assert checkip.url() == "https://checkip.amazonaws.com"
    monkeypatch.setenv(checkip.ENV, URL)
    responses.get(URL, body="198.51.100.20")
    assert checkip.caller_cidr() == "198.51.100.20/32"


@responses.activate
def test_the_lookup_is_short(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    real = requests.get

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("timeout"))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(requests, "get", spy)
    responses.get(URL, body="203.0.113.7")
    checkip.caller_cidr(URL)
    assert seen == [3.0]


@pytest.mark.parametrize(("kwargs", "why"), [
    ({"body": requests.ConnectTimeout("slow")}, "ConnectTimeout"),
    ({"body": requests.ConnectionError("refused")}, "ConnectionError"),
    ({"body": "oops", "status": 503}, "HTTP 503"),
    ({"body": "<html>captive portal</html>"}, "not an IPv4 address"),
    ({"body": "2001:db8::1"}, "not an IPv4 address"),
    ({"body": "0.0.0.0"}, "not an address anyone connects from"),
    ({"status": 302, "headers": {"Location": "http://elsewhere.test/"}}, "HTTP 302"),
])
@responses.activate
def test_a_failed_lookup_asks_for_ssh_from(kwargs: dict[str, object], why: str) -> None:
    responses.get(URL, **kwargs)
    with pytest.raises(ValidationError) as err:
        checkip.caller_cidr(URL)
    assert err.value.field == "--ssh-from" and err.value.exit_status == 2
    assert why in str(err.value) and "pass --ssh-from YOUR_IP/32" in str(err.value)
