"""`spawn doctor`'s policy-simulator path, against moto's IAM state and a local simulator.

moto does not implement iam:SimulatePrincipalPolicy, so these tests answer that one call locally:
a botocore ``before-call`` handler on the controller's session evaluates each simulated request
with ``tests.iam_evaluator`` (condition-aware, from AWS's documented evaluation logic) against the
policies moto holds for the principal doctor names, and returns what AWS's API returns
(EvaluationResults with ResourceSpecificResults; MissingContextValues for condition keys the
request did not supply). Everything else is the moto server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders

from controller import aws as controller_aws
from controller.cli import main
from controller.iam.cli_policy import policy
from controller.iam.document import statement_covers, statements
from spored.errors import ExitStatus
from tests import iam_evaluator
from tests.aws.iam_users import become, iam_user
from tests.conftest import MotoServer

REGION = "us-east-1"


# one moto state for the module (a module-scoped fixture): its tests stay on one xdist worker
pytestmark = pytest.mark.xdist_group("test_doctor_simulator")



def _documents(principal_arn: str) -> list[dict[str, Any]]:
    """The managed policies moto has attached to the user or role (read as the test's admin)."""
    iam = boto3.client("iam")
    name = principal_arn.rsplit("/", 1)[1]
    attached = (iam.list_attached_user_policies(UserName=name) if ":user/" in principal_arn
                else iam.list_attached_role_policies(RoleName=name))["AttachedPolicies"]
    docs: list[dict[str, Any]] = []
    for item in attached:
        version = iam.get_policy(PolicyArn=item["PolicyArn"])["Policy"]["DefaultVersionId"]
        doc: Any = iam.get_policy_version(PolicyArn=item["PolicyArn"],
                                          VersionId=version)["PolicyVersion"]["Document"]
        docs.append(json.loads(doc) if isinstance(doc, str) else dict(doc))
    return docs


def _missing_keys(docs: list[dict[str, Any]], action: str, context: dict[str, Any]) -> list[str]:
    """Condition keys of the statements about ``action`` that the request context lacks."""
    known = {k.casefold() for k in context}
    keys = {key for doc in docs for stmt in statements(doc) if statement_covers(stmt, action)
            for operator in (stmt.get("Condition") or {}).values() for key in operator}
    return sorted(k for k in keys if k.casefold() not in known)


class LocalSimulator:
    """Answers SimulatePrincipalPolicy on the controller's session; records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []
        self._pending: dict[str, Any] = {}

    def remember(self, params: dict[str, Any], **_: Any) -> None:
        self._pending = dict(params)

    def answer(self, **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        params, self._pending = self._pending, {}
        self.asked.append(params)
        docs = _documents(params["PolicySourceArn"])
        context: dict[str, Any] = {}
        for entry in params.get("ContextEntries", []):
            values = entry["ContextKeyValues"]
            context[entry["ContextKeyName"]] = values if entry["ContextKeyType"].endswith("List") \
                else values[0]
        results = []
        for action in params["ActionNames"]:
            (resource,) = params.get("ResourceArns") or ["*"]
            decision = iam_evaluator.evaluate(docs, action, resource, context)
            effect = {iam_evaluator.Effect.ALLOW: "allowed",
                      iam_evaluator.Effect.EXPLICIT_DENY: "explicitDeny",
                      iam_evaluator.Effect.IMPLICIT_DENY: "implicitDeny"}[decision.effect]
            missing = [] if decision.allowed else _missing_keys(docs, action, context)
            results.append({"EvalActionName": action, "EvalResourceName": resource,
                            "EvalDecision": effect,
                            "ResourceSpecificResults": [{"EvalResourceName": resource,
                                                         "EvalResourceDecision": effect,
                                                         "MissingContextValues": missing}]})
        return AWSResponse("https://iam.amazonaws.com/", 200, HTTPHeaders(), None), \
            {"EvaluationResults": results, "IsTruncated": False}


    def install(self) -> None:
        """Answer on the controller's current session (a new one after credentials change)."""
        events = controller_aws.session().events
        events.register("provide-client-params.iam.SimulatePrincipalPolicy", self.remember)
        answer: Any = self.answer  # a before-call handler that answers instead of the endpoint
        events.register("before-call.iam.SimulatePrincipalPolicy", answer)


@pytest.fixture
def simulator(cloud: MotoServer) -> Iterator[LocalSimulator]:
    controller_aws.session.cache_clear()
    local = LocalSimulator()
    local.install()
    yield local
    controller_aws.session.cache_clear()  # the session with the handlers goes away


def _as_user(monkeypatch: pytest.MonkeyPatch, name: str, document: dict[str, Any],
             simulator: LocalSimulator) -> None:
    become(monkeypatch, iam_user(document, name))
    simulator.install()


def _permissions(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main(["doctor", "--region", REGION, "--json"])
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    return code, checks["permissions"]


@pytest.mark.usefixtures("home")
def test_minimal_policy_simulates_as_allowed(simulator: LocalSimulator, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _as_user(monkeypatch, "sim-minimal", policy("minimal"), simulator)
    code, perms = _permissions(capsys)
    assert (code, perms["status"]) == (ExitStatus.OK, "ok"), perms
    assert perms["detail"].startswith("all ") and perms["detail"].endswith(
        " actions a launch needs are allowed")
    assert {p["PolicySourceArn"] for p in simulator.asked} == {"arn:aws:iam::123456789012:user/sim-minimal"}
    passing = next(p for p in simulator.asked if "iam:PassRole" in p["ActionNames"])
    assert passing["ResourceArns"] == ["arn:aws:iam::123456789012:role/spawn/spawn-doctor"]


@pytest.mark.usefixtures("home")
def test_a_missing_iam_action_fails_by_simulation(simulator: LocalSimulator,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    document = policy("minimal")
    for stmt in document["Statement"]:
        stmt["Action"] = [a for a in stmt["Action"] if a != "iam:PassRole"]
    document["Statement"].append({"Effect": "Deny", "Action": "s3:PutObject", "Resource": "*"})
    _as_user(monkeypatch, "sim-no-pass", document, simulator)
    code, perms = _permissions(capsys)
    assert (code, perms["status"]) == (ExitStatus.PREFLIGHT, "fail")
    assert perms["detail"] == ("denied: iam:PassRole (policy simulator: implicitDeny); "
                               "s3:PutObject (policy simulator: explicitDeny)")


@pytest.mark.usefixtures("home")
def test_the_scoped_policy_is_never_reported_as_failing(simulator: LocalSimulator,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A launch works with the scoped policy: doctor may be unable to prove every conditional
    # action, but must not call one denied.
    _as_user(monkeypatch, "sim-scoped", policy("scoped"), simulator)
    code, perms = _permissions(capsys)
    assert perms["status"] in {"ok", "could-not-check"}, perms
    assert code == ExitStatus.OK
    # Without spawn's boundary the scoped policy cannot create a role: not proven either way.
    assert "iam:CreateRole" in perms["detail"]


@pytest.mark.usefixtures("home")
def test_the_scoped_policy_with_its_boundary_simulates_as_allowed(
        simulator: LocalSimulator, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["iam", "setup", "--json"]) == ExitStatus.OK  # the administrator's one-time step
    capsys.readouterr()
    _as_user(monkeypatch, "sim-scoped-boundary", policy("scoped"), simulator)
    code, perms = _permissions(capsys)
    assert (code, perms["status"]) == (ExitStatus.OK, "ok"), perms
    creating = next(p for p in simulator.asked if "iam:CreateRole" in p["ActionNames"])
    assert {"ContextKeyName": "iam:PermissionsBoundary", "ContextKeyType": "string",
            "ContextKeyValues": ["arn:aws:iam::123456789012:policy/spawn/spawn-boundary"]} \
        in creating["ContextEntries"]


@pytest.mark.usefixtures("home")
def test_a_role_session_is_simulated_through_its_role(simulator: LocalSimulator,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    iam = boto3.client("iam")
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
         "Action": "sts:AssumeRole"}]}
    role = iam.create_role(RoleName="deployer", Path="/team/", AssumeRolePolicyDocument=json.dumps(trust))
    arn = iam.create_policy(PolicyName="deployer-p",
                            PolicyDocument=json.dumps(policy("minimal")))["Policy"]["Arn"]
    iam.attach_role_policy(RoleName="deployer", PolicyArn=arn)
    creds = boto3.client("sts").assume_role(RoleArn=role["Role"]["Arn"],
                                            RoleSessionName="alice")["Credentials"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", creds["SessionToken"])
    controller_aws.session.cache_clear()
    simulator.install()
    code, perms = _permissions(capsys)
    assert (code, perms["status"]) == (ExitStatus.OK, "ok"), perms
    assert {p["PolicySourceArn"] for p in simulator.asked} == {"arn:aws:iam::123456789012:role/team/deployer"}
