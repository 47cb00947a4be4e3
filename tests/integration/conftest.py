"""The integration tier's harness.

- The agent as a real subprocess (``run_agent``: ``AgentProcess``, the sandbox's own harness)
  against the IMDS emulator (``emulator_for``) and the moto server. The agent gets no static AWS
  credentials: boto3 in the child finds them through the emulator's ``iam/security-credentials``
  and reaches moto only through AWS_ENDPOINT_URL. Intervals are seconds (``FAST_CONFIG``). Tests
  wait for its log events (``agent.wait_for``) and its status file (``agent.wait_status``), never
  for a fixed time.
- spawn installed the way users install it (``installed``): the wheel built from this tree,
  installed (not editable) into a fresh virtual environment outside the tree, once per session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.sandbox.agent import AgentDirs, AgentProcess
from controller.sandbox.cloud import agent_environment
from controller.sandbox.imds_emulator import ImdsEmulator
from spored.contract import TAG_AGENT_STATUS, format_timestamp, parse_timestamp
from tests.conftest import MotoServer

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"

# Seconds instead of minutes: what the tests wait for happens within a few seconds.
FAST_CONFIG = """
tick = "1s"
spot_poll = "1s"
tag_refresh = "1s"
tag_refresh_api = "2s"
completion_delay = "2s"
boot_grace = "1s"
wall = false
warn_at = ["3s"]
"""
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
ENDED = {"shutting-down", "terminated"}
# The agent promises to act within 2 s of its deadline, and to start the pre-stop hook within 2 s
# of a spot notice: bench/agent_footprint.py measures both against that promise. The tests hold
# it to "never early, and not forgotten": on a 2-core machine running the whole suite in parallel
# an action was seen 8.6 s late.
LATE_OK = 15.0

StartAgent = Callable[..., AgentProcess]
Emulators = Callable[..., ImdsEmulator]


@pytest.fixture
def emulator_for(aws: MotoServer) -> Iterator[Emulators]:
    """An IMDS emulator serving one instance of the moto server; stopped after the test.
    ``session``: the boto3 session the emulator reads the instance and mints credentials with
    (an admin's, once IAM enforcement is on)."""
    emulators: list[ImdsEmulator] = []

    def make(instance_id: str, *, session: Any = None) -> ImdsEmulator:
        emu = ImdsEmulator(instance_id, REGION, aws.url, session=session).start()
        emulators.append(emu)
        return emu

    yield make
    for emu in emulators:
        emu.stop()


@pytest.fixture
def run_agent(aws: MotoServer, tmp_path: Path) -> Iterator[StartAgent]:
    """Starts `spored run` with FAST_CONFIG and ``extra`` in spored.d/, against ``emulator``.

    Every agent of a test shares one set of directories under ``tmp_path / "agent"`` (a restarted
    agent finds its state); ``state_dir`` moves the state elsewhere, ``ec2_endpoint`` replaces the
    moto server, ``env`` adds variables (NOTIFY_SOCKET too, which AgentProcess otherwise drops).
    All are stopped after the test."""
    agents: list[AgentProcess] = []

    def start(emulator: ImdsEmulator, extra: str = "", *, ec2_endpoint: str | None = None,
              state_dir: Path | None = None, env: Mapping[str, str] | None = None) -> AgentProcess:
        dirs = AgentDirs(tmp_path / "agent", state_dir=state_dir)
        dirs.config.parent.mkdir(parents=True, exist_ok=True)
        dirs.runtime.mkdir(parents=True, exist_ok=True, mode=0o750)
        dirs.drop_ins.mkdir(exist_ok=True)
        dirs.config.write_text(FAST_CONFIG)
        (dirs.drop_ins / "50-test.toml").write_text(extra)
        agent = AgentProcess(dirs, agent_environment(ec2_endpoint or aws.url, emulator.url, REGION))
        agent.env.update(env or {})
        agents.append(agent)
        agent.start()
        return agent

    yield start
    for agent in agents:
        agent.stop()


@pytest.fixture
def admin(aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An admin user's boto3 session: the test's and the emulator's own calls keep working once
    IAM enforcement is on."""
    import boto3

    from controller import aws as controller_aws

    iam = controller_aws.client("iam")
    iam.create_user(UserName="admin")
    iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*",
                                                 "Resource": "*"}]}))
    key = iam.create_access_key(UserName="admin")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    controller_aws.session.cache_clear()
    yield boto3.session.Session(region_name=REGION)
    controller_aws.session.cache_clear()


def role_credentials_minted(emulator: ImdsEmulator) -> None:
    """Fetch the instance role's credentials through the emulator once: sts:AssumeRole happens
    there, and must happen before IAM enforcement is switched on."""
    import requests

    token = requests.put(f"{emulator.url}/latest/api/token", timeout=5,
                         headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"}).text
    base = f"{emulator.url}/latest/meta-data/iam/security-credentials/"
    role = requests.get(base, headers={"X-aws-ec2-metadata-token": token}, timeout=10).text.strip()
    assert requests.get(base + role, headers={"X-aws-ec2-metadata-token": token},
                        timeout=10).json()["Code"] == "Success"


# ---------------------------------------------------------------------- instances in moto
def ec2() -> Any:
    import boto3

    return boto3.client("ec2", region_name=REGION)


def launch(tags: dict[str, str], *, metadata_tags: bool = True, spot: bool = False) -> str:
    """An instance with an instance profile (the emulator serves its role's credentials)."""
    import boto3

    iam = boto3.client("iam")
    try:
        iam.create_role(RoleName="spored-role", Path="/spawn/", AssumeRolePolicyDocument=TRUST)
        iam.create_instance_profile(InstanceProfileName="spored-profile", Path="/spawn/")
        iam.add_role_to_instance_profile(InstanceProfileName="spored-profile", RoleName="spored-role")
    except iam.exceptions.EntityAlreadyExistsException:
        pass  # a second instance in the same test
    resp = ec2().run_instances(
        ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="t3.micro",
        IamInstanceProfile={"Name": "spored-profile"},
        MetadataOptions={"HttpTokens": "required",
                         "InstanceMetadataTags": "enabled" if metadata_tags else "disabled"},
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
        **({"InstanceMarketOptions": {"MarketType": "spot"}} if spot else {}))
    return str(resp["Instances"][0]["InstanceId"])


def state_of(instance_id: str) -> str:
    res = ec2().describe_instances(InstanceIds=[instance_id])["Reservations"][0]
    return str(res["Instances"][0]["State"]["Name"])


def in_seconds(seconds: float) -> datetime:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0) + timedelta(seconds=1)


def set_deadline(instance_id: str, seconds: float) -> datetime:
    """``spawn extend`` through the EC2 API: a new spawn:expires-at ``seconds`` from now."""
    deadline = in_seconds(seconds)
    ec2().create_tags(Resources=[instance_id],
                      Tags=[{"Key": "spawn:expires-at", "Value": format_timestamp(deadline)}])
    return deadline


def agent_status_tag(instance_id: str) -> str | None:
    tags = ec2().describe_tags(Filters=[{"Name": "resource-id", "Values": [instance_id]},
                                        {"Name": "key", "Values": [TAG_AGENT_STATUS]}])["Tags"]
    return str(tags[0]["Value"]) if tags else None


# ---------------------------------------------------------------------- what the agent says
def started(agent: AgentProcess, timeout: float = 30) -> dict[str, Any]:
    """The agent made its first complete observation (its READY point) with the identity known."""
    return agent.wait_status(lambda s: s.get("pid") == agent.pid and bool(s.get("instance_id")), timeout,
                             "the agent's identity")


def has_deadline(agent: AgentProcess, deadline: datetime, timeout: float = 15) -> dict[str, Any]:
    return agent.wait_status(lambda s: s.get("deadline") == format_timestamp(deadline), timeout,
                             f"deadline {format_timestamp(deadline)}")


def evaluated_after(agent: AgentProcess, moment: datetime, timeout: float = 30) -> dict[str, Any]:
    """The agent has evaluated its lifecycle at ``moment`` or later: it rewrites its status file
    (``updated_at``, the time of the evaluation) after every evaluation, so whatever it would
    have done at ``moment`` it has decided by now. This is how a test shows that something did
    NOT happen by a given time, without sleeping."""
    return agent.wait_status(lambda s: parse_timestamp(s["updated_at"]) >= moment, timeout,
                             f"an evaluation at or after {format_timestamp(moment)}")


def more_evaluations(agent: AgentProcess, count: int, timeout: float = 30) -> None:
    """The agent has evaluated ``count`` more times from now: its status file has been replaced
    (written anew after every evaluation) ``count`` times. Independent of the agent's clock, for
    the tests that step it."""
    def version() -> tuple[int, int] | None:
        try:
            info = agent.dirs.status_file.stat()
        except OSError:
            return None
        return info.st_ino, info.st_mtime_ns

    seen = [version()]

    def rewritten() -> bool:
        if (current := version()) != seen[-1]:
            seen.append(current)
        return len(seen) > count

    until(lambda: rewritten() or agent.exit_code() is not None, timeout,
          f"{count} more evaluations", agent)
    assert agent.exit_code() is None, f"the agent exited:\n{agent.log_tail()}"


def timestamp(event: dict[str, Any]) -> datetime:
    return parse_timestamp(str(event["timestamp"]))


def lag(event: dict[str, Any], moment: datetime) -> float:
    """Seconds from ``moment`` to the event (negative: the event came first)."""
    return (timestamp(event) - moment).total_seconds()


def until(check: Callable[[], Any], timeout: float, what: str, agent: AgentProcess) -> Any:
    """``check()`` once it is truthy (polled every 50 ms), for things outside the agent's log
    and status file (files a hook writes, the emulator's request log, a socket's datagrams)."""
    end = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() >= end:
            raise AssertionError(f"{what}: not within {timeout}s:\n{agent.log_tail()}")
        time.sleep(0.05)
    return result


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ``bin`` directory of a venv holding the installed wheel (its dependencies from the pip
    cache or the index pip is configured for, pinned by constraints.txt)."""
    base = tmp_path_factory.mktemp("installed-spawn")
    wheels = base / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
                            str(REPO)], capture_output=True, text=True, timeout=600, check=False, cwd=base)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(wheels.glob("spawn_spored-*.whl"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                              "--disable-pip-version-check", "-c", str(REPO / "constraints.txt"), str(wheel)],
                             capture_output=True, text=True, timeout=900, check=False, cwd=base)
    assert install.returncode == 0, install.stderr[-3000:]
    yield venv / "bin"


def installed_env(bin_dir: Path, aws: MotoServer, home: Path) -> dict[str, str]:
    """An environment like a new user's: a fresh HOME and caches, the installed venv first on PATH,
    fake credentials, and the moto server as the only AWS endpoint."""
    keep = ("LANG", "LC_ALL", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CERT",
            "PIP_DEFAULT_TIMEOUT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update({
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "XDG_CONFIG_HOME": str(home / ".config"),
        "AWS_ENDPOINT_URL": aws.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "SPAWN_CHECKIP_URL": os.environ["SPAWN_CHECKIP_URL"],  # loopback (tests/conftest.py): no internet
        # pip's cache and configuration stay the user's: the index they already use
        "PIP_CACHE_DIR": str(Path.home() / ".cache" / "pip"),
        "PIP_CONFIG_FILE": os.environ.get("PIP_CONFIG_FILE", "/etc/pip.conf"),
    })
    return env
