"""Shared fixtures: a moto server speaking the AWS APIs on loopback, fake credentials everywhere.

No test can reach real AWS: credentials are fake and every AWS endpoint is the local server; the
public-address lookup for SSH points at a loopback port that refuses.
In CI (CI=true) a skipped test fails the run, in every tier: a test that must not run in CI is
deselected (never collected), not skipped.

Under pytest-xdist (``./dev test`` runs ``-n``) every worker is its own pytest session, so the
session-scoped ``moto_server`` is one server per worker, on a port the kernel picks (port 0).
Tests that must not share the machine with others, or that share an expensive module-scoped
fixture, carry an ``xdist_group`` (run with ``--dist loadgroup``): the e2e tier is one group.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from controller.sandbox.faultproxy import FaultProxy

REAL_PARTS = ("aws", "integration", "e2e")
RERUNS = 2

# The live tier (tests/live: `spawn selftest` in a real AWS account) is collected only when a
# maintainer opts in with SPAWN_LIVE_TESTS=1, and never in CI: everywhere else it is a documented
# deselection, not a skip. It runs with the environment as it was before the fakes below.
LIVE_OPT_IN = os.environ.get("SPAWN_LIVE_TESTS") == "1" and os.environ.get("CI", "").lower() != "true"
LIVE_ENV = dict(os.environ)
collect_ignore_glob = [] if LIVE_OPT_IN else ["live/*"]

# Set before anything imports boto3: fake credentials, a fixed region, no shared config files.
os.environ.update({
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
    # `spawn launch` looks up the caller's public address for SSH: never on the internet from a
    # test. This loopback port refuses, so a test that needs an address serves or passes one.
    "SPAWN_CHECKIP_URL": "http://127.0.0.1:9/",
})
os.environ.pop("AWS_PROFILE", None)


@dataclass
class MotoServer:
    url: str
    port: int

    def reset(self) -> None:
        import requests

        # seconds normally (AWS managed policies are reloaded); minutes on a loaded 2-core machine
        requests.post(f"{self.url}/moto-api/reset", timeout=600).raise_for_status()

    def enforce_iam(self, on: bool = True) -> None:
        """Switch moto's IAM enforcement (actions only; see the notes) on or off."""
        import requests

        body = "0" if on else "inf"  # moto authenticates once its request count >= this number
        requests.post(f"{self.url}/moto-api/reset-auth", data=body, timeout=10).raise_for_status()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _host, port = server.get_host_and_port()
    try:
        yield MotoServer(url=f"http://127.0.0.1:{port}", port=port)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cloud(moto_server: MotoServer) -> Iterator[MotoServer]:
    """One moto state for a whole test module, reached through AWS_ENDPOINT_URL: a reset
    re-initializes moto's region data (seconds, more on a loaded machine), too slow for every test.
    Each test of such a module leaves the state as others expect it (resources of its own, a
    region of its own, or undoing what it broke). A module gets it as ``aws`` by marking itself
    ``shared_moto``; under xdist, an ``xdist_group`` keeps its tests on one worker (one reset)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", moto_server.url)
        moto_server.reset()
        yield moto_server


@pytest.fixture
def aws(request: pytest.FixtureRequest, moto_server: MotoServer,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """A clean moto server, reached by the product only through AWS_ENDPOINT_URL; in a module
    marked ``shared_moto``, the module's one moto state (``cloud``) instead of a reset."""
    if request.node.get_closest_marker("shared_moto") is not None:
        server: MotoServer = request.getfixturevalue("cloud")
    else:
        moto_server.reset()
        server = moto_server
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    try:
        from controller import aws as controller_aws
    except ImportError:
        controller_aws = None  # type: ignore[assignment]
    if controller_aws is not None:
        controller_aws.session.cache_clear()
    yield server
    with contextlib.suppress(Exception):
        server.enforce_iam(False)
    if controller_aws is not None:
        controller_aws.session.cache_clear()


@pytest.fixture
def proxy(aws: MotoServer) -> Iterator[FaultProxy]:
    """The fault-injecting proxy (controller/sandbox/faultproxy.py) in front of the moto server:
    EC2 calls through ``proxy.url`` can be black-holed or failed by action."""
    from controller.sandbox.faultproxy import FaultProxy

    with FaultProxy(aws.url) as running:
        yield running


@pytest.fixture
def console_outputs(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Per-instance console text for GetConsoleOutput. moto (in this process) answers every
    instance with one fixed sample text (moto.ec2.responses.general.SAMPLE_CONSOLE_OUTPUT), so
    the tests fill this dict with what the instance's console would show."""
    from moto.core.responses import ActionResult
    from moto.core.types import Base64EncodedString
    from moto.core.utils import utcnow
    from moto.ec2.responses import general

    texts: dict[str, str] = {}

    def answer(self: Any) -> Any:
        instance = self.ec2_backend.get_instance(self._get_param("InstanceId"))
        text = texts.get(instance.id, general.SAMPLE_CONSOLE_OUTPUT)
        return ActionResult({"InstanceId": instance.id, "Timestamp": utcnow(),
                             "Output": Base64EncodedString.from_raw_string(text)})

    monkeypatch.setattr(general.General, "get_console_output", answer)
    return texts


@pytest.fixture
def shutdown_behaviour_modelled(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto answers ModifyInstanceAttribute(InstanceInitiatedShutdownBehavior) with success and
    changes nothing (its handlers do not know the attribute). Model EC2, which changes it
    (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ModifyInstanceAttribute.html)."""
    from moto.core.responses import EmptyResult
    from moto.ec2.responses.instances import InstanceResponse

    original = InstanceResponse.modify_instance_attribute

    def modify(self: Any) -> Any:
        value = self._get_param("InstanceInitiatedShutdownBehavior.Value")
        if value is None:
            return original(self)
        self.ec2_backend.modify_instance_attribute(self._get_param("InstanceId"),
                                                   "instance_initiated_shutdown_behavior", value)
        return EmptyResult()

    monkeypatch.setattr(InstanceResponse, "modify_instance_attribute", modify)


@pytest.fixture
def ec2_denials_like_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under IAM enforcement moto answers a denied EC2 call with ``AccessDenied``; EC2 answers
    ``UnauthorizedOperation`` ("You are not authorized to perform this operation", EC2 API
    Reference, Common client error codes; also what DryRun returns when the call would be denied).
    Model AWS here, so the agent's permission proof sees what it would see on EC2."""
    from moto.core import exceptions

    original = exceptions.AccessDeniedError.__init__

    def init(self: Any, user_arn: str, action: str) -> None:
        if not action.startswith("ec2:"):
            original(self, user_arn, action)
            return
        exceptions._RESTError.__init__(
            self, "UnauthorizedOperation",
            f"You are not authorized to perform this operation. User: {user_arn} action: {action}")

    monkeypatch.setattr(exceptions.AccessDeniedError, "__init__", init)


@pytest.fixture
def agent_logs() -> Iterator[io.StringIO]:
    """The agent's JSON log lines, into a buffer of this test's own (never into a stream another
    test's capture closed)."""
    from spored import logs

    stream = io.StringIO()
    logs.configure(json=True, stream=stream)
    yield stream
    logs.configure(json=True, stream=io.StringIO())


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Entry points configure structlog with the stream of the moment (pytest's capture, which is
    closed after the test); start every test from structlog's defaults instead."""
    import structlog

    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "shared_moto: the module's tests share one moto state (the cloud "
                                       "fixture) instead of a reset per test")


_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: its reports reach the controlling process, which decides
    if os.environ.get("CI", "").lower() == "true" and _skipped:
        print(f"\nCI: {len(_skipped)} test(s) skipped; in CI that is a failure:")
        for node in sorted(set(_skipped)):
            print(f"  {node}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tier markers follow the folder: tests/aws -> aws, tests/integration, tests/e2e.
    The e2e tier is one xdist group: its tests share one container and run on one worker."""
    for item in items:
        parts = item.path.parts
        for tier in REAL_PARTS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
                # Real processes, servers and timers on a shared 2-core machine: a test that fails
                # is run again, at most twice (pytest-rerunfailures; reruns show as R in the
                # summary). A real fault fails three times. Unit tests get no second chance.
                if item.get_closest_marker("flaky") is None:
                    item.add_marker(pytest.mark.flaky(reruns=RERUNS, reruns_delay=2))
        if "e2e" in parts:
            item.add_marker(pytest.mark.xdist_group("e2e"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """On an xdist worker with --dist loadgroup, every grouped test must carry its group in its
    node id (that is how xdist keeps a group on one worker). pytest 9.2 broke this silently
    (pytest-dev/pytest-xdist#1386): groups would run on several workers at once, and the e2e
    tier would fight itself for 169.254.169.254."""
    config = session.config
    if not (hasattr(config, "workerinput") and config.getvalue("loadgroup")):
        return
    lost = [item.nodeid for item in session.items
            if item.get_closest_marker("xdist_group") and "@" not in item.nodeid.rsplit("]", 1)[-1]]
    if lost:
        raise pytest.UsageError(f"xdist dropped the xdist_group of {len(lost)} test(s), e.g. {lost[0]}: "
                                f"pytest {pytest.__version__} with this pytest-xdist cannot group tests")
