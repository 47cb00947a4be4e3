"""The permission proof's verdicts and console line, and the failsafe's times: pure tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spored import failsafe
from spored.agent_status import AgentStatus, StatusTracker, tag_value
from spored.contract import Action
from spored.permission_proof import CREATE_TAGS, Check, Verdict, checks_for, classify, find_reported, prove

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
TERMINATE = Check("TerminateInstances", "ec2:TerminateInstances")
STOP = Check("StopInstances", "ec2:StopInstances")


@pytest.mark.parametrize(("code", "verdict"), [
    ("DryRunOperation", Verdict.OK), ("UnauthorizedOperation", Verdict.DENIED),
    ("RequestLimitExceeded", Verdict.INCONCLUSIVE), ("NoCredentialsError", Verdict.INCONCLUSIVE),
    ("EndpointConnectionError", Verdict.INCONCLUSIVE), ("AccessDenied", Verdict.INCONCLUSIVE),
])
def test_only_the_documented_codes_decide(code: str, verdict: Verdict) -> None:
    assert classify(code) is verdict


def test_the_checks_follow_the_lifecycle_actions() -> None:
    assert checks_for([Action.TERMINATE]) == (TERMINATE, CREATE_TAGS)
    assert checks_for([Action.STOP, Action.STOP]) == (STOP, CREATE_TAGS)
    hib = checks_for([Action.HIBERNATE, Action.STOP])
    assert [(c.operation, c.hibernate) for c in hib] == [("StopInstances", True), ("StopInstances", False),
                                                         ("CreateTags", False)]


def test_the_console_line_names_what_is_denied() -> None:
    proof = prove([(STOP, "UnauthorizedOperation"), (CREATE_TAGS, "UnauthorizedOperation")])
    assert proof.console_line() == "spored: permissions denied: ec2:StopInstances,ec2:CreateTags"
    assert prove([(TERMINATE, "DryRunOperation"), (CREATE_TAGS, "DryRunOperation")]).console_line() == \
        "spored: permissions ok: ec2:TerminateInstances,ec2:CreateTags"
    unsure = prove([(TERMINATE, "RequestLimitExceeded"), (CREATE_TAGS, "DryRunOperation")])
    assert unsure.console_line() == "spored: permissions inconclusive: ec2:TerminateInstances"
    # a denial wins over an inconclusive answer
    mixed = prove([(TERMINATE, "Throttling"), (CREATE_TAGS, "UnauthorizedOperation")])
    assert mixed.summary() == "permissions denied: ec2:CreateTags"


def test_the_last_report_in_a_console_wins() -> None:
    text = ("[ 3.2] cloud-init: ...\n[ 9.1] spored[7]: spored: permissions denied: ec2:TerminateInstances,"
            "ec2:CreateTags\n[ 99.0] spored[8]: spored: permissions ok: ec2:StopInstances,ec2:CreateTags\n")
    found = find_reported(text)
    assert found is not None and found.verdict is Verdict.OK
    assert found.actions == ("ec2:StopInstances", "ec2:CreateTags")
    assert find_reported("Linux version 2.6.16-xenU\n") is None
    assert find_reported("degraded 2026-11-28T12:00:00Z permissions denied: ec2:StopInstances") is not None


def test_the_status_tag_carries_the_denial_within_ec2s_256_characters() -> None:
    assert tag_value(AgentStatus.DEGRADED, NOW, "permissions denied: ec2:StopInstances") == \
        "degraded 2026-11-28T12:00:00Z permissions denied: ec2:StopInstances"
    assert tag_value(AgentStatus.READY, NOW) == "ready 2026-11-28T12:00:00Z"
    assert len(tag_value(AgentStatus.DEGRADED, NOW, "x" * 400)) == 256
    tracker = StatusTracker()
    tracker.observe(AgentStatus.DEGRADED, NOW, detail="permissions denied: ec2:CreateTags")
    assert tracker.due(0.0) == "degraded 2026-11-28T12:00:00Z permissions denied: ec2:CreateTags"


def test_failsafe_times() -> None:
    deadline = NOW + timedelta(hours=2)
    assert failsafe.failsafe_at(deadline=deadline, idle_timeout=timedelta(hours=1), now=NOW) == \
        deadline + timedelta(minutes=30)
    assert failsafe.failsafe_at(deadline=None, idle_timeout=timedelta(hours=1), now=NOW) == \
        NOW + timedelta(hours=1, minutes=30)
    assert failsafe.failsafe_at(deadline=None, idle_timeout=None, now=NOW) is None
    assert failsafe.request_text(NOW) == f"{int(NOW.timestamp())}\n"
    assert failsafe.request_text(None) == "none\n"
    assert [failsafe.shutdown_behaviour(a) for a in Action] == ["terminate", "stop", "stop"]


def test_the_keeper_writes_on_changes_and_slides_every_five_minutes() -> None:
    keeper = failsafe.Keeper()
    first = NOW + timedelta(hours=2)
    assert keeper.due(first, sliding=False)
    keeper.written(first, sliding=False)
    assert not keeper.due(first, sliding=False)
    assert keeper.due(first + timedelta(seconds=10), sliding=False)  # spawn extend +10s
    assert keeper.due(None, sliding=False)  # spawn:managed removed: "none"
    keeper.written(NOW + timedelta(minutes=90), sliding=True)
    assert not keeper.due(NOW + timedelta(minutes=94), sliding=True)
    assert keeper.due(NOW + timedelta(minutes=95), sliding=True)
    assert keeper.due(first, sliding=False)  # a TTL was set: from sliding to the deadline
