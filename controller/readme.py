"""Tables in README.md that come from code: tags, reasons, exit codes, templates, commands, events.

Each table sits between ``<!-- BEGIN generated:NAME -->`` and ``<!-- END generated:NAME -->``.
``python -m controller.readme`` rewrites them; a test fails when README.md drifts from the code.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from spored.contract import ACTION_FORM, DURATION_FORM, REASON_DESCRIPTIONS, TAGS, TIMESTAMP_FORM
from spored.errors import EXIT_DESCRIPTIONS


def _tags() -> str:
    rows = ["| key | value | written by | read by | meaning |", "|---|---|---|---|---|"]
    rows += [f"| `{t.key}` | {t.value_format} | {t.written_by} | {t.read_by} | {t.meaning} |" for t in TAGS]
    rows += ["", f"Durations: {DURATION_FORM}; positive, at most 366 days.",
             f"Timestamps: {TIMESTAMP_FORM}. Actions: {ACTION_FORM}."]
    return "\n".join(rows)


def _reasons() -> str:
    rows = ["| reason code | when |", "|---|---|"]
    rows += [f"| `{r.value}` | {text} |" for r, text in REASON_DESCRIPTIONS.items()]
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
                nested = any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
                if nested:
                    walk(sub, f"{prefix} {name}")
                else:
                    rows.append(f"| `{prefix} {name}` | {helps.get(name, '')} |")

    walk(build_parser(), "spawn")
    return "\n".join(rows)


def _sandbox_events() -> str:
    from controller.sandbox.display import EVENTS

    rows = ["| event | meaning |", "|---|---|"]
    rows += [f"| `{name}` | {text} |" for name, text in EVENTS.items()]
    return "\n".join(rows)


GENERATORS: dict[str, Callable[[], str]] = {
    "tags": _tags,
    "reasons": _reasons,
    "exit-codes": _exit_codes,
    "templates": _templates,
    "commands": _commands,
    "sandbox-events": _sandbox_events,
}

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
    path = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "README.md"
    original = path.read_text(encoding="utf-8")
    updated = render(original)
    if updated != original:
        path.write_text(updated, encoding="utf-8")
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
