"""docs/iam.md describes the code: the CLI policy additions, the templates, the bound."""

from __future__ import annotations

from controller.iam.propagation import max_total_delay
from controller.iam.templates import TEMPLATES
from controller.readme import DOCUMENTS, render

DOC = DOCUMENTS[1]

TEXT = DOC.read_text(encoding="utf-8")


def test_documented_additions_are_exactly_what_spawn_prints() -> None:
    assert render(TEXT) == TEXT, "docs/iam.md is stale: run `python -m controller.readme`"
    assert "`iam:GetRole`" in TEXT and "`iam:TagRole`" in TEXT


def test_every_template_service_scope_is_documented() -> None:
    for service in {t.service for t in TEMPLATES.values()}:
        assert f"\n| {service} |" in TEXT


def test_documented_retry_bound() -> None:
    assert f"at most {max_total_delay():.0f} s of sleep" in TEXT


def test_agent_policy_section_carries_before_after_and_evidence() -> None:
    import json
    import re

    from controller.iam.lint import DOCUMENTED_GLOBAL_KEYS
    from tests.unit.test_iam_agent_matrix import OLD_AGENT_POLICY

    section = TEXT[TEXT.index("## The agent's policy"):TEXT.index("## What the person running")]
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", section, re.DOTALL)]
    from controller.iam import agent_policy_document

    assert blocks == [agent_policy_document(), OLD_AGENT_POLICY]
    for entry in DOCUMENTED_GLOBAL_KEYS.values():
        for url in entry.reference.split(" ; "):
            assert url in section
    assert "aws-managed-policy/latest/reference/AWSEC2VssSnapshotPolicy.html" in section
    assert "moto ignores IAM conditions" in section


def test_the_administrators_rights_for_setup_are_documented() -> None:
    from controller import permissions

    for action in permissions.required_actions("admin"):
        assert f"`{action}`" in TEXT, action
