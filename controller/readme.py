"""Blocks in the documentation that come from code: tags, reasons, exit codes, templates,
commands, events and the CLI policy additions (README.md and the files of docs/ in ``DOCUMENTS``).
Each table sits between ``<!-- BEGIN generated:NAME -->`` and ``<!-- END generated:NAME -->``.
``python -m controller.readme`` rewrites them; tests fail when a document drifts from the code.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from spored.contract import ACTION_FORM, DURATION_FORM, REASON_DESCRIPTIONS, TAGS, TIMESTAMP_FORM
from spored.exit_codes import AGENT_EXIT_DESCRIPTIONS, EXIT_DESCRIPTIONS


def _cell(text: str) -> str:
    """Markdown table cell: pipes escaped, angle brackets outside code spans kept visible."""
    parts = re.split(r"(`[^`]*`)", text.replace("|", "\\|"))
    return "".join(part if part.startswith("`") else part.replace("<", "&lt;").replace(">", "&gt;")
                   for part in parts)


def _tags() -> str:
    rows = ["| key | value | written by | read by | meaning |", "|---|---|---|---|---|"]
    rows += [f"| `{t.key}` | {_cell(t.value_format)} | {_cell(t.written_by)} | {_cell(t.read_by)} "
             f"| {_cell(t.meaning)} |" for t in TAGS]
    rows += ["", f"Durations: {_cell(DURATION_FORM)}; positive, at most 366 days.",
             f"Timestamps: {_cell(TIMESTAMP_FORM)}. Actions: {_cell(ACTION_FORM)}."]
    return "\n".join(rows)


def _reasons() -> str:
    rows = ["| reason code | when |", "|---|---|"]
    rows += [f"| `{r.value}` | {_cell(text)} |" for r, text in REASON_DESCRIPTIONS.items()]
    return "\n".join(rows)


def _exit_codes() -> str:
    rows = ["| exit code | meaning |", "|---|---|"]
    rows += [f"| {int(code)} | {text} |" for code, text in EXIT_DESCRIPTIONS.items()]
    return "\n".join(rows)


def _templates() -> str:
    from controller.iam import templates

    rows = ["| template | actions |", "|---|---|"]
    for name, tpl in templates.TEMPLATES.items():
        actions = ", ".join(f"`{a}`" for a in tpl.actions)
        rows.append(f"| `{name}` | {actions} |")
    return "\n".join(rows)


def _commands() -> str:
    """Every `spawn` subcommand with its one-line help, from the parser itself."""
    import argparse

    from controller.cli import build_parser

    rows = ["| command | what it does |", "|---|---|"]

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                continue
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                positionals = [a for a in sub._actions if not a.option_strings]
                if positionals and isinstance(positionals[0], argparse._SubParsersAction):
                    walk(sub, f"{prefix} {name}")  # `spawn iam templates`, ...
                else:
                    text = " ".join(helps.get(name, "").split()).replace("|", "\\|")
                    rows.append(f"| `{prefix} {name}` | {text} |")

    walk(build_parser(), "spawn")
    return "\n".join(rows)


def _sandbox_events() -> str:
    from controller.sandbox.display import EVENTS

    rows = ["| event | meaning |", "|---|---|"]
    rows += [f"| `{name}` | {text} |" for name, text in EVENTS.items()]
    return "\n".join(rows)


def _agent_exit_codes() -> str:
    rows = ["| exit code | meaning |", "|---|---|"]
    rows += [f"| {int(code)} | {text} |" for code, text in sorted(AGENT_EXIT_DESCRIPTIONS.items())]
    return "\n".join(rows)


def _agent_config() -> str:
    """Every key of /etc/spored/spored.toml with its default, from spored.config.Config."""
    from dataclasses import fields
    from datetime import timedelta

    from spored.config import Config
    from spored.contract import format_duration

    def show(value: object) -> str:
        if isinstance(value, timedelta):
            return format_duration(value)
        if isinstance(value, tuple):
            return "[" + ", ".join(show(v) for v in value) + "]"
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value) if str(value) else '""'

    default = Config()
    rows = ["| key | default |", "|---|---|"]
    rows += [f"| `{f.name}` | `{show(getattr(default, f.name))}` |"
             for f in fields(Config) if f.name != "lifecycle"]
    rows.append("| `[lifecycle]` | `ttl`, `expires_at`, `idle_timeout`, `on_complete`: the launch-time "
                "copy of the tags, used only when tags cannot be read |")
    return "\n".join(rows)


def _agent_policy() -> str:
    import json

    from controller.iam import agent_policy_document

    return "```json\n" + json.dumps(agent_policy_document(), indent=2) + "\n```"


def _cli_policy_additions() -> str:
    """The actions spawn's minimal CLI policy adds to the seed's list, wrapped for reading."""
    import textwrap

    from controller.iam.cli_policy import ADDITIONS_SID, minimal_policy

    stmt = next(s for s in minimal_policy()["Statement"] if s.get("Sid") == ADDITIONS_SID)
    text = ", ".join(f"`{a}`" for a in stmt["Action"]) + "."
    return "\n".join(textwrap.wrap(text, width=100, break_on_hyphens=False))


def _cli_policy_scoped() -> str:
    import json

    from controller.iam.cli_policy import scoped_policy

    return "```json\n" + json.dumps(scoped_policy(), indent=2) + "\n```"


def _boundary_policy() -> str:
    import json

    from controller.iam.boundary import boundary_document

    return "```json\n" + json.dumps(boundary_document(), indent=2) + "\n```"


GENERATORS: dict[str, Callable[[], str]] = {
    "tags": _tags,
    "reasons": _reasons,
    "exit-codes": _exit_codes,
    "templates": _templates,
    "commands": _commands,
    "sandbox-events": _sandbox_events,
    "agent-exit-codes": _agent_exit_codes,
    "agent-config": _agent_config,
    "agent-policy": _agent_policy,
    "cli-policy-additions": _cli_policy_additions,
    "cli-policy-scoped": _cli_policy_scoped,
    "boundary-policy": _boundary_policy,
}

ROOT = Path(__file__).resolve().parents[1]
# Every document with generated blocks (README.md first, docs/iam.md second: tests index them).
DOCUMENTS = (ROOT / "README.md", ROOT / "docs" / "iam.md", ROOT / "docs" / "commands.md",
             ROOT / "docs" / "agent.md", ROOT / "docs" / "sandbox.md")

_BLOCK = re.compile(
    r"(<!-- BEGIN generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- END generated:(?P=name) -->)",
    re.DOTALL,
)


def render(text: str) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group("name")
        generator = GENERATORS.get(name)
        if generator is None:
            return match.group(0)
        return f"{match.group(1)}{generator()}\n{match.group(4)}"

    return _BLOCK.sub(sub, text)


def blocks(text: str) -> list[str]:
    return [m.group("name") for m in _BLOCK.finditer(text)]


def main(argv: list[str] | None = None) -> int:
    for path in [Path(a) for a in argv] if argv else DOCUMENTS:
        original = path.read_text(encoding="utf-8")
        updated = render(original)
        if updated != original:
            path.write_text(updated, encoding="utf-8")
            print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
