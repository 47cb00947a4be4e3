"""`spawn selftest`'s pure parts: the proof's lines and verdicts, the report, the budget."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from controller.selftest import proof
from controller.selftest.run import transition_time
from controller.selftest.stages import STAGE_NAMES, Budget, Report, StageResult, Verdict, render

PEER = "i-0123456789abcdef0"


def _line(target: str, action: str, expect: str, got: str, code: str = "") -> str:
    return f"{proof.PREFIX} proof target={target} action={action} expect={expect} got={got} code={code}"


def _all_as_expected() -> list[str]:
    return [
        _line("self", "ec2:TerminateInstances", "allowed", "allowed", "DryRunOperation"),
        _line("self", "ec2:CreateTags", "allowed", "allowed", "DryRunOperation"),
        _line("self", "ec2:DeleteTags", "denied", "denied", "UnauthorizedOperation"),
        _line("peer", "ec2:TerminateInstances", "denied", "denied", "UnauthorizedOperation"),
        _line("peer", "ec2:CreateTags", "denied", "denied", "UnauthorizedOperation"),
        proof.DONE,
    ]


def test_console_noise_around_the_proof_lines_is_ignored() -> None:
    console = ["[   12.3] cloud-init[812]: " + _all_as_expected()[0] + "\r", "garbage spawn-selftest: nope",
               *_all_as_expected()[1:]]
    lines, done = proof.parse(console)
    assert done and len(lines) == 5
    assert lines[0].target == "self" and lines[0].code == "DryRunOperation"


def test_on_aws_every_expectation_holding_passes() -> None:
    verdict, detail = proof.judge(*proof.parse(_all_as_expected()), local=False, peer_is_real=True)
    assert verdict is Verdict.PASSED, detail


def test_the_instance_refused_on_itself_fails_everywhere() -> None:
    lines = [_line("self", "ec2:TerminateInstances", "allowed", "denied", "UnauthorizedOperation"),
             proof.DONE]
    for local in (False, True):
        verdict, detail = proof.judge(*proof.parse(lines), local=local, peer_is_real=True)
        assert verdict is Verdict.FAILED and "may not act on its own instance" in detail


def test_ending_another_instance_allowed_fails_on_aws_and_is_not_decided_locally() -> None:
    lines = [_line("self", "ec2:TerminateInstances", "allowed", "allowed", "DryRunOperation"),
             _line("peer", "ec2:TerminateInstances", "denied", "allowed", "DryRunOperation"), proof.DONE]
    verdict, detail = proof.judge(*proof.parse(lines), local=False, peer_is_real=True)
    assert verdict is Verdict.FAILED and "more than end and tag itself" in detail
    verdict, detail = proof.judge(*proof.parse(lines), local=True, peer_is_real=True)
    assert verdict is Verdict.NOT_DECIDED_HERE and "moto ignores IAM conditions" in detail


def test_a_made_up_peer_is_inconclusive_not_passed() -> None:
    lines = [_line("self", "ec2:TerminateInstances", "allowed", "allowed", "DryRunOperation"),
             _line("peer", "ec2:TerminateInstances", "denied", "inconclusive", "InvalidInstanceID.NotFound"),
             proof.DONE]
    verdict, _ = proof.judge(*proof.parse(lines), local=False, peer_is_real=False)
    assert verdict is Verdict.INCONCLUSIVE


def test_an_unfinished_proof_fails() -> None:
    verdict, detail = proof.judge(*proof.parse(_all_as_expected()[:-1]), local=False, peer_is_real=True)
    assert verdict is Verdict.FAILED and "did not finish" in detail


@pytest.mark.parametrize(("peer", "region"), [
    ("i-0123'; reboot; '", "us-east-1"), (PEER, "us-east-1'$(id)"), ("i-12", "us-east-1"), (PEER, "")])
def test_the_user_data_refuses_anything_but_an_instance_id_and_a_region(peer: str, region: str) -> None:
    with pytest.raises(ValueError):
        proof.user_data(peer, region)


def test_the_user_data_passes_values_as_quoted_arguments_and_the_program_verbatim() -> None:
    text = proof.user_data(PEER, "eu-west-1").decode()
    assert text.startswith("#!/bin/sh\n")
    assert f"- '{PEER}' 'eu-west-1' /dev/console <<'SPAWN_SELFTEST_PROOF'\n" in text
    assert proof.PROGRAM in text and text.endswith("SPAWN_SELFTEST_PROOF\n")
    compile(proof.PROGRAM, "proof", "exec")  # the program is valid Python


def test_state_transition_time_is_read_when_ec2_gives_one() -> None:
    assert transition_time("User initiated (2026-11-30 07:48:57 GMT)") == datetime(
        2026, 11, 30, 7, 48, 57, tzinfo=UTC)
    assert transition_time("") is None


def test_the_budget_bounds_two_instances_for_ten_minutes() -> None:
    budget = Budget("t4g.nano", 0.0042)
    assert budget.max_usd == pytest.approx(0.0042 * 2 / 6, abs=1e-4)
    assert "10 minutes" in budget.text() and "t4g.nano" in budget.text()
    assert Budget("x9.huge", None).max_usd is None


def test_a_report_marks_unchecked_stages_not_reached_and_is_not_ok() -> None:
    report = Report(run_id="st-1", region="us-east-1", local=False, budget=Budget("t3.nano", 0.0052))
    report.record(StageResult("role", Verdict.PASSED, "ok", 1.0))
    report.record(StageResult("running", Verdict.FAILED, "InsufficientInstanceCapacity", 2.0))
    report.complete()
    data = report.to_dict()
    assert [s["name"] for s in data["stages"]] == list(STAGE_NAMES)
    assert [s["verdict"] for s in data["stages"]][2:] == ["not-reached"] * (len(STAGE_NAMES) - 2)
    assert data["ok"] is False
    assert data["stages"][1]["fix"] and data["stages"][0]["fix"] is None
    stream = io.StringIO()
    render(data, stream)
    assert "[FAIL]" in stream.getvalue() and "fix: check the region's EC2 quotas" in stream.getvalue()
    assert stream.getvalue().rstrip().endswith("FAILED: see the stages above")


def test_the_failsafe_line_selftest_looks_for_is_the_one_the_user_data_prints() -> None:
    from controller.launch import userdata
    from controller.selftest.run import FAILSAFE_ARMED

    prefix, _, words = FAILSAFE_ARMED.partition(": ")
    assert f"say() {{ printf '{prefix}: %s" in userdata.FAILSAFE_HELPER
    assert f'say "{words} for $when' in userdata.FAILSAFE_HELPER
