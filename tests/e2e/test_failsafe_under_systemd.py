"""The failsafe under a real systemd: an instance whose agent never comes up, or fails for good,
still powers off. One container plays the instance through three stages, in order:

1. the bundle URL fails (404): the user-data's install fails, and the power-off it armed FIRST,
   before the download, is there: ``spawn-failsafe.timer`` at the deadline + 30 min, running
   ``systemctl poweroff``;
2. an instance whose bundle downloads: the agent takes the failsafe over, and
   ``spawn extend`` moves it (agent -> /run/spored/failsafe -> spored-failsafe.path -> a new timer);
3. the agent crash-loops past its start limit: ``OnFailure=`` starts spored-failed.timer, whose
   service powers the machine off (its grace shortened to 2 s by a drop-in). The container
   really powers off; the console (nspawn's output) shows which unit did it.

The stages share the container and run in file order; each stands alone (`-k`): the installed,
healthy agent that stages 2 and 3 need is a module-scoped fixture.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from spored.contract import TAG_EXPIRES_AT, parse_timestamp
from tests.e2e.conftest import Cloud


def wait_for(what: str, check: Any, timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def failsafe_timer(cloud: Cloud) -> dict[str, str]:
    return cloud.container.show("spawn-failsafe.timer", "ActiveState", "TimersCalendar",
                                "NextElapseUSecRealtime", "LoadState")


def armed_at(cloud: Cloud) -> datetime | None:
    """The failsafe timer's calendar time, as systemd holds it (None: no timer)."""
    props = failsafe_timer(cloud)
    if props.get("ActiveState") != "active":
        return None
    calendar = props.get("TimersCalendar", "")
    text = calendar.split("OnCalendar=", 1)[1].split(" ;", 1)[0].strip() if "OnCalendar=" in calendar else ""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC) if text else None


def console(cloud: Cloud) -> str:
    """Everything the container's system console showed (nspawn's output)."""
    return cloud.container.console.read_text(errors="replace")


def launch(cloud: Cloud, name: str, ttl: str, bundle_url: str) -> dict[str, Any]:
    proc = cloud.spawn("launch", "--instance-type", "t3.micro", "--region", "us-east-1", "--name", name,
                       "--ttl", ttl, "--agent-bundle", bundle_url, "--no-wait", "--json")
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def hide_uploaded_bundle(cloud: Cloud, instance_id: str) -> None:
    import base64
    from email import message_from_bytes
    from urllib.parse import urlsplit

    import boto3

    parts = [part.get_payload(decode=True) for part in message_from_bytes(cloud.user_data(instance_id)).walk()
             if not part.is_multipart()]
    install = next(p.decode() for p in parts if isinstance(p, bytes) and b"BUNDLE_URL_B64=" in p)
    url = base64.b64decode(install.split("BUNDLE_URL_B64='")[1].split("'")[0]).decode()
    bucket, key = urlsplit(url).path.lstrip("/").split("/", 1)
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=cloud.moto_url)
    s3.delete_object(Bucket=bucket, Key=key)


def test_a_failing_bundle_url_leaves_a_power_off_armed(cloud: Cloud) -> None:
    # The bundle goes to the account's bucket (in moto), as every local bundle does (plain http
    # bundle URLs are refused). Removing the uploaded object makes its pre-signed URL answer 404,
    # and curl --fail gives up. (A later launch uploads it again: its key is content-addressed.)
    result = launch(cloud, "e2e-failsafe", "10m", cloud.bundle_path)
    hide_uploaded_bundle(cloud, str(result["instances"][0]["instance_id"]))
    instance_id = str(result["instances"][0]["instance_id"])
    expected = parse_timestamp(result["failsafe_at"])
    deadline = parse_timestamp(cloud.tags(instance_id)[TAG_EXPIRES_AT])
    assert expected == deadline + timedelta(minutes=30)
    cloud.serve_metadata_for(instance_id)
    proc = cloud.run_user_data(instance_id)
    assert proc.returncode != 0
    assert cloud.container.systemctl("is-active", "spored.service").stdout.strip() != "active"
    assert armed_at(cloud) == expected, failsafe_timer(cloud)
    service = cloud.container.show("spawn-failsafe.service", "ExecStart")["ExecStart"]
    assert "systemctl" in service and "poweroff" in service
    assert "agent install FAILED" in console(cloud) + proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def healthy_agent(cloud: Cloud) -> str:
    """An instance whose bundle downloads: the agent installed and running; its instance id."""
    result = launch(cloud, "e2e-failsafe-agent", "10m", cloud.bundle_path)
    instance_id = str(result["instances"][0]["instance_id"])
    cloud.serve_metadata_for(instance_id)
    cloud.container.write_file("/etc/spored/spored.d/50-site.toml",
                               f'ec2_endpoint = "{cloud.moto_url}"\ntick = "1s"\ntag_refresh = "2s"\n')
    proc = cloud.run_user_data(instance_id)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return instance_id


def test_a_healthy_agent_takes_the_failsafe_over_and_extend_moves_it(cloud: Cloud,
                                                                      healthy_agent: str) -> None:
    instance_id = healthy_agent
    assert cloud.container.systemctl("is-active", "spored-failsafe.path").stdout.strip() == "active"
    deadline = parse_timestamp(cloud.tags(instance_id)[TAG_EXPIRES_AT])
    proc = cloud.spawn("extend", instance_id, "+20m", "--region", "us-east-1", "--json")
    assert proc.returncode == 0, proc.stderr
    moved = deadline + timedelta(minutes=20 + 30)
    try:
        wait_for("the agent to move the failsafe", lambda: armed_at(cloud) == moved, 60)
    except AssertionError as exc:
        run = cloud.container.run
        agent = [e for e in cloud.container.journal("-u", "spored.service").splitlines() if "failsafe" in e]
        raise AssertionError(
            f"{exc}\nexpected {moved}; timer: {failsafe_timer(cloud)}\n"
            f"request: {run('ls', '-l', '/run/spored/').stdout} {run('cat', '/run/spored/failsafe').stdout}\n"
            f"path unit: {cloud.container.systemctl('status', 'spored-failsafe.path').stdout}\n"
            f"service: {cloud.container.journal('-u', 'spored-failsafe.service', '-o', 'short')}\n"
            f"agent: {agent}"
        ) from None
    journal = cloud.container.journal("-u", "spored-failsafe.service")
    assert "power-off armed for" in journal
    # the agent's permission proof reached the console (moto: no IAM enforcement here, all allowed)
    wait_for("the permission line on the console",
             lambda: "spored: permissions ok: ec2:TerminateInstances,ec2:CreateTags"
             in console(cloud), 30)


def test_an_agent_that_fails_for_good_powers_the_machine_off(cloud: Cloud, healthy_agent: str) -> None:
    """Last: the container goes away. A crash loop (the real binary, refusing its arguments) with a
    start limit of 3 and a 2 s grace instead of 30 min."""
    container = cloud.container
    # the failsafe the agent keeps (deadline + 30 min; later if extended) is not what fires here
    far = wait_for("the failsafe timer", lambda: armed_at(cloud), 30)
    assert far - datetime.now(UTC) > timedelta(minutes=30)
    container.write_file("/etc/systemd/system/spored.service.d/60-crash.conf",
                         "[Unit]\nStartLimitBurst=3\nStartLimitIntervalSec=60\n"
                         "[Service]\nRestartSec=100ms\nExecStart=\n"
                         "ExecStart=/opt/spored/venv/bin/spored --no-such-option\n")
    container.write_file("/etc/systemd/system/spored-failed.timer.d/60-short.conf",
                         "[Timer]\nOnActiveSec=\nOnActiveSec=2s\n")
    container.systemctl("daemon-reload", check=True)
    container.systemctl("restart", "--no-block", "spored.service")
    assert container.proc is not None
    wait_for("the container to power off", lambda: container.proc is not None and
             container.proc.poll() is not None, 90, interval=0.2)
    assert container.proc.returncode == 0
    text = console(cloud)
    assert "spored failed for good: powering off (spored-failed.timer)" in text, text[-3000:]
