"""docs/iam.md describes the code: the CLI policy additions, the templates, the bound."""

from __future__ import annotations

import re
from pathlib import Path

from controller.iam.cli_policy import ADDITIONS_SID, policy
from controller.iam.propagation import max_total_delay
from controller.iam.templates import TEMPLATES

DOC = (Path(__file__).resolve().parents[2] / "docs" / "iam.md").read_text(encoding="utf-8")


def test_documented_additions_are_exactly_what_spawn_prints() -> None:
    block = DOC.split("<!-- cli-policy-additions -->")[1].split("<!-- /cli-policy-additions -->")[0]
    documented = re.findall(r"`([a-z0-9-]+:[A-Za-z]+)`", block)
    additions = next(s for s in policy("minimal")["Statement"] if s.get("Sid") == ADDITIONS_SID)
    assert documented == additions["Action"]


def test_every_template_service_scope_is_documented() -> None:
    for service in {t.service for t in TEMPLATES.values()}:
        assert f"\n| {service} |" in DOC


def test_documented_retry_bound() -> None:
    assert f"at most {max_total_delay():.0f} s of sleep" in DOC
