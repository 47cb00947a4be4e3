"""`spawn doctor`'s pure parts: result lines, the JSON shape, the exit status, and how permission
answers (policy simulator, EC2 DryRun) are read."""

from __future__ import annotations

import json

import pytest

from controller.doctor import access, report
from controller.doctor.report import Check, Status
from spored.exit_codes import EXIT_DESCRIPTIONS, ExitStatus


def _checks(*statuses: Status) -> list[Check]:
    return [Check(f"c{i}", s, f"detail {i}", None if s in (Status.OK, Status.UNKNOWN) else f"fix {i}")
            for i, s in enumerate(statuses)]


def test_a_failure_blocks_and_exits_with_the_documented_code() -> None:
    checks = _checks(Status.OK, Status.WARN, Status.FAIL, Status.UNKNOWN)
    assert report.exit_status(checks) == ExitStatus.PREFLIGHT
    assert int(ExitStatus.PREFLIGHT) == 5
    assert "spawn doctor" in EXIT_DESCRIPTIONS[ExitStatus.PREFLIGHT]
    assert report.to_json(checks)["ok"] is False


@pytest.mark.parametrize("statuses", [(Status.OK,), (Status.OK, Status.WARN), (Status.UNKNOWN,)])
def test_warnings_and_unanswered_checks_do_not_block(statuses: tuple[Status, ...]) -> None:
    checks = _checks(*statuses)
    assert report.exit_status(checks) == ExitStatus.OK
    assert report.to_json(checks)["ok"] is True


def test_json_shape_is_one_object_with_checks_and_ok() -> None:
    doc = report.to_json(_checks(Status.OK, Status.FAIL))
    assert json.loads(json.dumps(doc)) == {
        "checks": [{"name": "c0", "status": "ok", "detail": "detail 0", "fix": None},
                   {"name": "c1", "status": "fail", "detail": "detail 1", "fix": "fix 1"}],
        "ok": False}
    assert {s.value for s in Status} == {"ok", "warn", "fail", "could-not-check"}


def test_one_line_per_check_with_its_fix() -> None:
    lines = report.lines(_checks(Status.OK, Status.FAIL, Status.UNKNOWN))
    assert len(lines) == 3
    assert lines[0].split() == ["ok", "c0", "detail", "0"]
    assert lines[1].startswith("FAIL ") and lines[1].endswith("detail 1 -> fix: fix 1")
    assert lines[2].startswith("could not check  c2")
    assert len({line.index("detail") for line in lines}) == 1  # columns line up


def test_a_failure_without_a_fix_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a fix"):
        Check("x", Status.FAIL, "broken")


@pytest.mark.parametrize(("arn", "kind", "role"), [
    ("arn:aws:iam::123456789012:user/dev/alice", "user", None),
    ("arn:aws:sts::123456789012:assumed-role/Admin/alice@example.com", "role", "Admin"),
    ("arn:aws-cn:sts::123456789012:assumed-role/ci-runner/1700000000", "role", "ci-runner"),
    ("arn:aws:iam::123456789012:root", "root", None),
    ("arn:aws:sts::123456789012:federated-user/bob", "other", None),
    ("arn:aws:sts::123456789012:user/moto", "other", None),
])
def test_who_is_simulated(arn: str, kind: str, role: str | None) -> None:
    principal = access.principal_of(arn)
    assert (principal.kind, principal.role_name) == (kind, role)
    if kind == "role":
        assert principal.arn == f"arn:{access.partition_of(arn)}:iam::123456789012:role/{role}"


def test_simulated_resources_are_the_ones_a_launch_touches() -> None:
    where = {"partition": "aws", "account": "123456789012", "region": "eu-west-1",
             "bucket": "spawn-agent-123456789012-eu-west-1", "ami_parameter": "/aws/service/x"}
    groups = access.simulation_groups(
        ["iam:CreateRole", "iam:PassRole", "iam:CreateInstanceProfile", "iam:ListInstanceProfilesForRole",
         "iam:GetPolicy", "s3:CreateBucket", "s3:PutObject", "s3:ListAllMyBuckets", "ssm:GetParameter",
         "ec2:RunInstances",
         "ec2:TerminateInstances", "ec2:DeleteSecurityGroup"],
        **where)
    assert groups == {
        "arn:aws:iam::123456789012:role/spawn/spawn-doctor":
            ["iam:CreateRole", "iam:ListInstanceProfilesForRole", "iam:PassRole"],
        "arn:aws:iam::123456789012:instance-profile/spawn/spawn-doctor": ["iam:CreateInstanceProfile"],
        "*": ["ec2:RunInstances", "s3:ListAllMyBuckets"],
        "arn:aws:iam::123456789012:policy/spawn/spawn-boundary": ["iam:GetPolicy"],
        "arn:aws:s3:::spawn-agent-123456789012-eu-west-1": ["s3:CreateBucket"],
        "arn:aws:s3:::spawn-agent-123456789012-eu-west-1/spored-bundle/doctor": ["s3:PutObject"],
        "arn:aws:ssm:eu-west-1::parameter/aws/service/x": ["ssm:GetParameter"],
        "arn:aws:ec2:eu-west-1:123456789012:security-group/sg-0d0c0000000000000":
            ["ec2:DeleteSecurityGroup"],
        "arn:aws:ec2:eu-west-1:123456789012:instance/i-0d0c0000000000000": ["ec2:TerminateInstances"],
    }


def test_simulator_answers() -> None:
    verdicts = access.Verdicts()
    access.read_simulation([
        {"EvalActionName": "ec2:RunInstances", "EvalDecision": "allowed"},
        {"EvalActionName": "iam:CreateRole", "EvalDecision": "implicitDeny",
         "MissingContextValues": ["iam:PermissionsBoundary"]},
        {"EvalActionName": "iam:PassRole", "EvalDecision": "implicitDeny", "MissingContextValues": []},
        {"EvalActionName": "s3:PutObject", "EvalDecision": "explicitDeny"},
        {"EvalActionName": "ec2:CreateTags", "EvalDecision": "implicitDeny",
         "ResourceSpecificResults": [{"EvalResourceName": "arn:aws:ec2:us-east-1:1:instance/i-1",
                                      "EvalResourceDecision": "implicitDeny",
                                      "MissingContextValues": ["ec2:CreateAction"]}]},
    ], verdicts)
    assert set(verdicts.allowed) == {"ec2:RunInstances"}
    assert verdicts.unknown == {"iam:CreateRole": "policy simulator: depends on iam:PermissionsBoundary",
                                "ec2:CreateTags": "policy simulator: depends on ec2:CreateAction"}
    assert verdicts.denied == {"iam:PassRole": "policy simulator: implicitDeny",
                               "s3:PutObject": "policy simulator: explicitDeny"}


def test_dry_run_answers_override_the_simulator() -> None:
    verdicts = access.Verdicts()
    access.read_simulation([{"EvalActionName": "ec2:RunInstances", "EvalDecision": "implicitDeny"},
                            {"EvalActionName": "ec2:ImportKeyPair", "EvalDecision": "allowed"}], verdicts)
    access.read_dry_run("DryRunOperation", ("ec2:RunInstances", "ec2:CreateTags"), verdicts, "RunInstances")
    assert set(verdicts.allowed) == {"ec2:RunInstances", "ec2:CreateTags", "ec2:ImportKeyPair"}
    access.read_dry_run("UnauthorizedOperation", ("ec2:ImportKeyPair", "ec2:CreateTags"), verdicts,
                        "ImportKeyPair")
    assert verdicts.denied == {"ec2:ImportKeyPair": "DryRun ImportKeyPair: UnauthorizedOperation "
                                                    "(needs ec2:ImportKeyPair and ec2:CreateTags)"}
    assert "ec2:CreateTags" in verdicts.allowed  # proven by the RunInstances DryRun


def test_an_undocumented_dry_run_answer_proves_nothing() -> None:
    verdicts = access.Verdicts()
    access.read_dry_run("InvalidParameterValue", ("ec2:CreateSecurityGroup",), verdicts,
                        "CreateSecurityGroup")
    assert verdicts.allowed == {} and verdicts.denied == {}
    assert "answered InvalidParameterValue" in verdicts.unknown["ec2:CreateSecurityGroup"]
