"""The whole chain for real: spawn launch -> user-data -> systemd -> spored -> IMDSv2 -> EC2 API.

One container plays two instances in turn, each with the user-data `spawn launch` rendered for
it, run the way cloud-init runs it:
1. an instance whose `spawn:managed` tag was removed: the agent is installed, reaches READY,
   gets credentials from the emulator's role and tags from metadata, survives kill -9 and a hang
   (SIGSTOP -> watchdog) - and never terminates the instance, even past its deadline;
2. a managed instance with a 30 s TTL: the same user-data re-run on a machine that has the agent
   (install is idempotent), kill -9 keeps the deadline, `spawn extend` moves it, and the instance
   is terminated at the new deadline and not at the old one.

Site settings go where an administrator would put them: /etc/spored/spored.d/ (the EC2
endpoint, which here is the moto server on the veth, and a 1 s tick) and a unit drop-in
(WatchdogSec=5s so a hang is caught quickly).

The tests share the container and run in file order, but each stands alone: what it needs (the
agent installed on the unmanaged instance, the managed instance, its end) comes from a
module-scoped fixture, set up by whichever test asks first, so one test run alone (`-k`) works.
"""

from __future__ import annotations

import json
import re
import struct
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from spored.contract import TAG_EXPIRES_AT, TAG_MANAGED, parse_timestamp
from tests.e2e.conftest import Cloud, dump_journal, spored_events

WATCHDOG_SEC = 5
TTL = "20s"
# The managed instance re-runs the install and restarts the agent before it can be extended:
# on a loaded 2-core machine that alone can take 15 s, so it gets a little more time.
MANAGED_TTL = "30s"
# The agent acts within 2 s of its deadline (bench/agent_footprint.py measures deadline ->
# TerminateInstances); here, with a container and other tests on 2 cores, it is held to "never
# early, not forgotten", and the lateness is reported.
LATE_OK = 10.0
ENDED = ("shutting-down", "terminated")


@dataclass
class Instance:
    """One instance the container plays, as launched and installed."""

    instance_id: str
    deadline: datetime
    credentials: dict[str, Any] = field(default_factory=dict)
    terminal: str = ""


def report(text: str) -> None:
    sys.stderr.write(f"\ne2e: {text}\n")


def wait_for(what: str, check: Any, timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def agent_status(cloud: Cloud) -> dict[str, Any]:
    proc = cloud.container.run("cat", "/run/spored/status.json")
    if proc.returncode != 0:
        return {}
    try:
        return dict(json.loads(proc.stdout))
    except ValueError:
        return {}


def main_pid(cloud: Cloud) -> int:
    return int(cloud.container.show("spored.service", "MainPID")["MainPID"])


def launch(cloud: Cloud, name: str, ttl: str = TTL) -> str:
    started = time.monotonic()
    proc = cloud.spawn("launch", "--instance-type", "t3.micro", "--region", "us-east-1", "--name", name,
                       "--ttl", ttl, "--agent-bundle", cloud.bundle_path, "--no-wait", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    report(f"launch {name} {time.monotonic() - started:.1f}s")
    return str(result["instances"][0]["instance_id"])


def install(cloud: Cloud, instance_id: str) -> None:
    """The instance's user-data, run as cloud-init runs it: installs (or re-installs) the agent."""
    started = time.monotonic()
    proc = cloud.run_user_data(instance_id)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report(f"install on {instance_id} {time.monotonic() - started:.1f}s")


def restarts(cloud: Cloud) -> int:
    return int(cloud.container.show("spored.service", "NRestarts")["NRestarts"])


def evaluated_past(cloud: Cloud, moment: datetime, seconds: float) -> bool:
    """The agent has evaluated at least ``seconds`` after ``moment``: it rewrites its status file
    (``updated_at``: the time of its last evaluation) after every evaluation."""
    updated = agent_status(cloud).get("updated_at")
    if not isinstance(updated, str):
        return False
    return (parse_timestamp(updated) - moment).total_seconds() > seconds


def site_settings(cloud: Cloud) -> None:
    cloud.container.write_file("/etc/spored/spored.d/50-site.toml",
                               f'ec2_endpoint = "{cloud.moto_url}"\ntick = "1s"\ntag_refresh = "2s"\n')
    cloud.container.write_file("/etc/systemd/system/spored.service.d/50-site.conf",
                               f"[Service]\nWatchdogSec={WATCHDOG_SEC}s\n")


@pytest.fixture(scope="module")
def unmanaged(cloud: Cloud) -> Instance:
    """The first instance: `spawn:managed` removed after launch, the agent installed from its
    user-data with the site settings."""
    instance_id = launch(cloud, "e2e-unmanaged")
    cloud.ec2().delete_tags(Resources=[instance_id], Tags=[{"Key": TAG_MANAGED}])
    deadline = parse_timestamp(cloud.tags(instance_id)[TAG_EXPIRES_AT])
    cloud.serve_metadata_for(instance_id)
    site_settings(cloud)
    install(cloud, instance_id)
    return Instance(instance_id, deadline)


@pytest.fixture(scope="module")
def managed(cloud: Cloud, unmanaged: Instance) -> Instance:
    """The second instance, managed, with a 30 s TTL: the same container (it has the agent: the
    install runs again, idempotent), with a user logged in on a terminal first."""
    terminal = open_terminal(cloud)
    instance_id = launch(cloud, "e2e-managed", MANAGED_TTL)
    deadline = parse_timestamp(cloud.tags(instance_id)[TAG_EXPIRES_AT])
    imds = cloud.serve_metadata_for(instance_id)
    install(cloud, instance_id)
    # what the emulator serves for the role while the instance runs (must never reach the logs)
    credentials = imds.credentials(cloud.tags(instance_id)["spawn:role"])
    return Instance(instance_id, deadline, credentials=credentials, terminal=terminal)


@pytest.fixture(scope="module")
def managed_ended(cloud: Cloud, managed: Instance) -> Instance:
    """The managed instance after the agent ended it (at its deadline, or an extended one), and
    said so (EC2 shows the instance ending while the agent's call is still returning)."""
    wait_for("the managed instance to end", lambda: cloud.instance(managed.instance_id)["State"]["Name"]
             in ENDED, (managed.deadline - datetime.now(UTC)).total_seconds() + 60, interval=0.5)
    wait_for("the agent's action.done", lambda: any(
        e["event"] == "action.done" and e.get("instance_id") == managed.instance_id
        for e in spored_events(cloud.container.journal("-u", "spored.service"))), 30, interval=0.5)
    return managed


def test_the_container_runs_units_under_a_real_systemd(cloud: Cloud) -> None:
    proc = cloud.container.run("systemd-run", "--quiet", "--wait", "--pipe", "--collect",
                               "-p", "Type=oneshot", "/bin/echo", "hello from a unit")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "hello from a unit"
    assert cloud.container.run("cat", "/proc/1/comm").stdout.strip() == "systemd"


def test_unmanaged_instance_installs_and_reaches_ready(cloud: Cloud, unmanaged: Instance) -> None:
    instance_id = unmanaged.instance_id
    imds = cloud.imds
    assert imds is not None and imds.instance_id == instance_id

    props = cloud.container.show("spored.service", "ActiveState", "SubState", "Type", "NRestarts",
                                 "StatusText", "UnitFileState", "User")
    assert props["ActiveState"] == "active" and props["SubState"] == "running", props
    assert props["Type"] == "notify"  # active means READY=1 was received
    assert props["UnitFileState"] == "enabled"
    assert props["User"] == "spored"
    assert props["StatusText"], "the agent reports its state in STATUS="
    assert cloud.container.systemctl("is-active", "spored-poweroff.path").stdout.strip() == "active"

    status = wait_for("the agent's status file", lambda: agent_status(cloud).get("instance_id"), 10)
    assert status == instance_id
    assert agent_status(cloud)["tags"]["source"] == "metadata"
    assert agent_status(cloud)["managed"] is False

    # tags came from instance metadata, through IMDSv2 tokens
    paths = {(r["method"], r["path"], r["status"]) for r in imds.control("GET", "requests")}
    assert ("PUT", "/latest/api/token", 200) in paths
    assert ("GET", f"/latest/meta-data/tags/instance/{TAG_EXPIRES_AT}", 200) in paths
    # the agent's own process runs as the unprivileged user
    pid = main_pid(cloud)
    uid_line = next(line for line in cloud.container.run("cat", f"/proc/{pid}/status").stdout.splitlines()
                    if line.startswith("Uid:"))
    assert uid_line.split()[1] != "0"


def utmp_login(pid: int, user: str, line: str) -> bytes:
    """One USER_PROCESS record in glibc's x86_64/aarch64 utmp layout (man 5 utmp), 384 bytes."""
    now = time.time()
    return struct.pack("<hxxi32s4s32s256shhiii16s20x", 7, pid, line.encode(), line[-4:].encode(),
                       user.encode(), b"10.0.0.1", 0, 0, 0, int(now), 0, bytes(16))


def test_other_users_sessions_are_seen_through_the_sandbox(cloud: Cloud, unmanaged: Instance) -> None:
    """ProtectProc= must leave a logged-in user's process visible, or a busy instance looks idle."""
    proc = cloud.container.run("systemd-run", "--quiet", "--unit=e2e-session", "-p", "User=nobody",
                               "/bin/sleep", "300", check=True)
    assert proc.returncode == 0
    pid = int(cloud.container.show("e2e-session.service", "MainPID")["MainPID"])
    utmp = Path(f"/proc/{cloud.container.pid1}/root/run/utmp")
    existing = utmp.read_bytes() if utmp.exists() else b""
    utmp.write_bytes(existing + utmp_login(pid, "nobody", "pts/7"))

    def sessions() -> Any:
        signals = agent_status(cloud).get("idle", {}).get("signals", [])
        return next((s.get("value") for s in signals if s.get("name") == "sessions"), None)

    assert wait_for("the agent to count the session", lambda: sessions() == 1, 10)
    cloud.container.systemctl("stop", "e2e-session.service")
    assert wait_for("the session to end when its process does", lambda: sessions() == 0, 10)


def test_installed_unit_verifies_clean_in_place(cloud: Cloud, unmanaged: Instance) -> None:
    proc = cloud.container.run("systemd-analyze", "verify", "/etc/systemd/system/spored.service",
                               "/etc/systemd/system/spored-poweroff.path")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_kill_9_restarts_the_agent(cloud: Cloud, unmanaged: Instance) -> None:
    before, count = main_pid(cloud), restarts(cloud)
    assert before > 0
    cloud.container.run("kill", "-9", str(before), check=True)
    wait_for("a new main PID, active again", lambda: (
        (p := cloud.container.show("spored.service", "MainPID", "ActiveState", "NRestarts"))
        and p["ActiveState"] == "active" and p["MainPID"] not in ("0", str(before)) and p), 20)
    assert restarts(cloud) == count + 1


def test_a_hung_agent_is_restarted_by_the_watchdog(cloud: Cloud, unmanaged: Instance) -> None:
    before, count = main_pid(cloud), restarts(cloud)
    cloud.container.run("kill", "-STOP", str(before), check=True)
    props = wait_for("the watchdog restart", lambda: (
        (p := cloud.container.show("spored.service", "MainPID", "ActiveState", "NRestarts"))
        and int(p["NRestarts"]) == count + 1 and p["ActiveState"] == "active" and p), WATCHDOG_SEC + 20)
    assert props["MainPID"] != str(before)
    assert "Watchdog timeout" in cloud.container.journal("-u", "spored.service", "-o", "short")


def test_unmanaged_instance_is_never_terminated(cloud: Cloud, unmanaged: Instance) -> None:
    wait_for("an evaluation 3 s past the unmanaged instance's deadline",
             lambda: evaluated_past(cloud, unmanaged.deadline, 3), 60, interval=0.5)
    assert cloud.instance(unmanaged.instance_id)["State"]["Name"] == "running"
    assert agent_status(cloud)["managed"] is False


def open_terminal(cloud: Cloud) -> str:
    """A logged-in user on a real pty: `script` runs a shell as nobody, recorded in utmp."""
    log = "/var/tmp/e2e-terminal.log"
    # systemd-run expands $: "$$$$" reaches the shell as "$$"
    shell = "tty > /var/tmp/e2e-terminal.tty; echo $$$$ > /var/tmp/e2e-terminal.pid; exec sleep 300"
    cloud.container.run("systemd-run", "--quiet", "--unit=e2e-terminal", "-p", "User=nobody",
                        "/usr/bin/script", "-qfc", shell, log, check=True)

    def shell_pid() -> str:
        return cloud.container.run("cat", "/var/tmp/e2e-terminal.pid").stdout.strip()

    pid = int(wait_for("the terminal", shell_pid, 10))
    tty = cloud.container.run("cat", "/var/tmp/e2e-terminal.tty").stdout.strip()
    assert tty.startswith("/dev/pts/"), tty
    utmp = Path(f"/proc/{cloud.container.pid1}/root/run/utmp")
    utmp.write_bytes(utmp.read_bytes() + utmp_login(pid, "nobody", tty.removeprefix("/dev/")))
    return log


def test_managed_instance_ttl_kill_and_extend(cloud: Cloud, unmanaged: Instance, managed: Instance) -> None:
    instance_id, original = managed.instance_id, managed.deadline

    # less than a minute left: the agent warns logged-in users on their terminals (wall, group tty)
    wait_for("the warning on the user's terminal",
             lambda: "spored:" in cloud.container.run("cat", managed.terminal).stdout, 15)
    wait_for("the agent to see the managed instance", lambda: (
        (s := agent_status(cloud)).get("instance_id") == instance_id and s.get("managed") is True), 15)
    assert parse_timestamp(agent_status(cloud)["deadline"]) == original

    # spawn extend +10s, well before the deadline
    remaining = (original - datetime.now(UTC)).total_seconds()
    assert remaining > 4, f"too late to extend ({remaining:.1f}s left): install took too long"
    proc = cloud.spawn("extend", instance_id, "+10s", "--region", "us-east-1", "--json")
    assert proc.returncode == 0, proc.stderr
    extended = parse_timestamp(cloud.tags(instance_id)[TAG_EXPIRES_AT])
    assert (extended - original).total_seconds() == 10
    wait_for("the agent to see the extension",
             lambda: agent_status(cloud).get("deadline") and
             parse_timestamp(agent_status(cloud)["deadline"]) == extended, 8)

    # kill -9: restarted, and the deadline is the same absolute time (not re-armed by the restart)
    restarts = int(cloud.container.show("spored.service", "NRestarts")["NRestarts"])
    before = main_pid(cloud)
    cloud.container.run("kill", "-9", str(before), check=True)
    wait_for("the restart after kill -9", lambda: (
        (p := cloud.container.show("spored.service", "MainPID", "ActiveState", "NRestarts"))
        and p["ActiveState"] == "active" and p["MainPID"] not in ("0", str(before))
        and int(p["NRestarts"]) == restarts + 1), 20)
    wait_for("the restarted agent's status", lambda: agent_status(cloud).get("pid") not in (None, before), 10)
    assert parse_timestamp(agent_status(cloud)["deadline"]) == extended

    # not terminated at the old deadline: the agent has evaluated 2 s past it, and the instance runs
    wait_for("an evaluation 2 s past the original deadline",
             lambda: evaluated_past(cloud, original, 2), 30, interval=0.1)
    assert cloud.instance(instance_id)["State"]["Name"] == "running"

    # terminated at the new one (never before it)
    seen = wait_for("termination", lambda: (
        cloud.instance(instance_id)["State"]["Name"] in ENDED
        and datetime.now(UTC)), (extended - datetime.now(UTC)).total_seconds() + LATE_OK + 10, interval=0.1)
    lateness = (seen - extended).total_seconds()
    report(f"termination lateness {lateness:.2f}s")
    assert -0.5 <= lateness <= LATE_OK, f"terminated {lateness:.2f}s after the deadline"
    assert cloud.instance(unmanaged.instance_id)["State"]["Name"] == "running"

    # the terminate call was signed with the emulator's credentials for the instance's role
    assert cloud.imds is not None
    role = cloud.tags(instance_id)["spawn:role"]
    fetched = {(r["path"], r["status"]) for r in cloud.imds.control("GET", "requests")}
    assert (f"/latest/meta-data/iam/security-credentials/{role}", 200) in fetched, sorted(fetched)


def test_spored_complete_works_for_the_group_and_no_one_else(cloud: Cloud, managed_ended: Instance) -> None:
    """After the managed instance ended (state is per boot, and this container plays two
    instances in one boot: a completion earlier would carry over)."""
    refused = cloud.container.run("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                                  "/usr/local/bin/spored", "complete")
    assert refused.returncode != 0
    assert "spored group" in refused.stdout + refused.stderr
    as_user(cloud, group_member(cloud), "/usr/local/bin/spored complete")
    completed = wait_for("the agent to take the completion marker",
                         lambda: agent_status(cloud).get("completion", {}).get("completed_at"), 10)
    assert completed
    assert cloud.container.run("test", "-e", "/run/spored/complete").returncode != 0  # consumed
    assert "completion.marker" in cloud.container.journal("-u", "spored.service")


def test_journal_holds_json_events_and_no_secret(cloud: Cloud, managed_ended: Instance) -> None:
    text = cloud.container.journal("-u", "spored.service")
    events = spored_events(text)
    names = {e["event"] for e in events}
    assert {"agent.start", "action.done"} <= names, sorted(names)
    done = [e for e in events if e["event"] == "action.done"]
    assert done[-1]["instance_id"] == managed_ended.instance_id
    creds = managed_ended.credentials  # what the emulator served for the role while the instance ran
    for secret in (creds["SecretAccessKey"], creds["Token"]):
        assert secret not in text
    # an IMDSv2 token is 56 URL-safe characters; none may appear in the logs
    assert not re.search(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{56}(?![A-Za-z0-9_-])", text)


def as_user(cloud: Cloud, user: str, command: str) -> None:
    cloud.container.run("setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
                        "sh", "-c", command, check=True)


def group_member(cloud: Cloud) -> str:
    """A person in group `spored`, as install.sh makes the image's default user."""
    if cloud.container.run("id", "e2e-member").returncode != 0:
        cloud.container.run("useradd", "--no-create-home", "--groups", "spored", "e2e-member", check=True)
    return "e2e-member"


REQUEST_DIR = "/run/spored/private"
REQUEST = f"{REQUEST_DIR}/poweroff"


def try_as(cloud: Cloud, user: str, command: str) -> int:
    return cloud.container.run("setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
                               "sh", "-c", command).returncode


def still_up(cloud: Cloud) -> None:
    assert cloud.container.proc is not None and cloud.container.proc.poll() is None
    assert cloud.container.systemctl("is-active", "spored-poweroff.path").stdout.strip() == "active"


def owner_mode_kind(cloud: Cloud, path: str) -> str:
    return cloud.container.run("stat", "-c", "%U %a %F", path).stdout.strip()


def test_a_group_member_can_neither_forge_nor_block_the_power_off(cloud: Cloud, unmanaged: Instance) -> None:
    """Group `spored` may create entries in /run/spored (to signal completion); the power-off
    request lives in the agent's own 0700 directory inside it, and /run/spored is sticky."""
    member = group_member(cloud)
    assert owner_mode_kind(cloud, "/run/spored") == "spored 1770 directory"
    assert owner_mode_kind(cloud, REQUEST_DIR) == "spored 700 directory"  # made by the agent at start
    # Forging: no way to put a request where the path unit looks.
    for attempt in (f"echo forged > {REQUEST}",
                    f"ln /run/spored/status.json {REQUEST}",
                    f"mv {REQUEST_DIR} /run/spored/gone && mkdir {REQUEST_DIR} && echo x > {REQUEST}",
                    f"ln -s /run/spored/status.json {REQUEST}"):
        assert try_as(cloud, member, attempt) != 0, attempt
    assert try_as(cloud, member, "echo forged > /run/spored/poweroff") == 0  # the old place: ignored
    # Blocking: the agent's directory can't be removed, renamed or filled.
    for attempt in (f"rm -rf {REQUEST_DIR}", f"mv {REQUEST_DIR} /run/spored/aside",
                    f"mkdir {REQUEST}", f"chmod 777 {REQUEST_DIR}"):
        assert try_as(cloud, member, attempt) != 0, attempt
    assert owner_mode_kind(cloud, REQUEST_DIR) == "spored 700 directory"
    # Nothing may fire. A path unit that does not trigger leaves no event to wait for, so a wrongly
    # matching one gets a moment to act (systemd acts on inotify at once; 1 s is ample).
    time.sleep(1)
    still_up(cloud)


def test_entries_planted_while_the_agent_was_down_neither_fire_nor_block(cloud: Cloud,
                                                                         unmanaged: Instance) -> None:
    """The one window: the agent's directory missing (a fresh boot before the agent runs)."""
    member = group_member(cloud)
    cloud.container.systemctl("stop", "spored.service")
    cloud.container.run("rm", "-rf", REQUEST_DIR, check=True)
    # a link to a directory of the member's holding a request of the member's: rejected, moved aside
    as_user(cloud, member, f"mkdir -p /tmp/m && echo forged > /tmp/m/poweroff && ln -s /tmp/m {REQUEST_DIR}")
    wait_for("the planted link to be moved aside",
             lambda: cloud.container.run("test", "-L", REQUEST_DIR).returncode != 0, 15)
    assert "not a 0700 directory of user spored" in cloud.container.journal("-u", "spored-poweroff.service")
    still_up(cloud)
    # a directory of the member's, ready to hold or block the agent's request: moved aside by the
    # agent (no request in it yet, so the path unit has nothing to act on)
    as_user(cloud, member, f"mkdir -m 0777 {REQUEST_DIR} && touch {REQUEST_DIR}/waiting")
    still_up(cloud)
    cloud.container.systemctl("start", "spored.service")
    wait_for("the agent to make its own directory",
             lambda: owner_mode_kind(cloud, REQUEST_DIR) == "spored 700 directory", 30)
    assert "runtime.planted_entry_moved" in cloud.container.journal("-u", "spored.service")
    still_up(cloud)


def test_the_agents_own_request_powers_the_machine_off(cloud: Cloud, unmanaged: Instance) -> None:
    """Last: the container goes away. The request is written by the agent's own code, as user spored."""
    dump_journal(cloud)
    cloud.container.run("setpriv", "--reuid=spored", "--regid=spored", "--init-groups",
                        "/opt/spored/venv/bin/python", "-c",
                        "from pathlib import Path; from spored import actions; "
                        "actions.request_poweroff(Path('/run/spored'), reason='e2e')", check=True)
    container = cloud.container
    assert container.proc is not None
    wait_for("the container to power off", lambda: container.proc is not None and
             container.proc.poll() is not None, 30, interval=0.2)
    assert container.proc.returncode == 0

