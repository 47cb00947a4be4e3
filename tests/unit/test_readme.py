"""The README describes the code: generated tables are current and every command shown exists."""

from __future__ import annotations

import argparse
import itertools
import re
import shlex
from pathlib import Path

import pytest

from controller import readme
from controller.cli import build_parser
from spored.cli import build_parser as spored_parser

README = Path(__file__).resolve().parents[2] / "README.md"
REQUIRED_BLOCKS = {"templates", "tags", "reasons", "exit-codes", "sandbox-events", "commands",
                   "agent-exit-codes", "agent-config", "agent-policy"}


def _text() -> str:
    return README.read_text(encoding="utf-8")


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def _invocations(program: str) -> list[list[str]]:
    """Every `program ...` line in the README's code blocks, split like a shell would."""
    found: list[list[str]] = []
    for block in _code_blocks(_text()):
        joined = block.replace("\\\n", " ")
        for raw in joined.splitlines():
            line = raw.strip().removeprefix("$ ")
            for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", line):
                words = shlex.split(part, comments=True) if part else []
                words = list(itertools.takewhile(lambda w: not w.startswith((">", "<", "2>")), words))
                if words and words[0] == program:
                    found.append(words[1:])
    return found


def _parses(parser: argparse.ArgumentParser, words: list[str], program: str) -> None:
    """The real parser accepts ``words``: commands, subcommands and flags all exist."""
    shown = " ".join([program, *words])
    try:
        args = parser.parse_args(words)
    except SystemExit:
        raise AssertionError(f"README shows `{shown}`, which the {program} parser refuses") from None
    assert getattr(args, "command", None), f"README shows `{shown}` without a command"


def test_generated_tables_are_current() -> None:
    text = _text()
    assert readme.render(text) == text, "README.md is stale: run `python -m controller.readme`"


def test_every_generated_table_is_present() -> None:
    assert set(readme.blocks(_text())) >= REQUIRED_BLOCKS
    assert set(readme.GENERATORS) >= REQUIRED_BLOCKS


def test_every_spawn_command_shown_exists() -> None:
    shown = _invocations("spawn")
    assert len(shown) >= 5, "the README shows how to use spawn"
    for words in shown:
        _parses(build_parser(), words, "spawn")


def test_every_spored_command_shown_exists() -> None:
    shown = _invocations("spored")
    assert shown, "the README shows the agent's commands"
    for words in shown:
        _parses(spored_parser(), words, "spored")


def test_quick_start_is_the_two_dev_commands() -> None:
    text = _text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [line.strip() for block in _code_blocks(quick) for line in block.splitlines()
                if line.strip() and not line.strip().startswith("#")]
    assert commands == ["./dev sandbox", "./dev test"]
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "./dev test" in ci


@pytest.mark.parametrize("words", [["no-such-command"], ["list", "--no-such-flag"], ["iam", "nothing"],
                                   ["--json"]])
def test_a_command_that_does_not_exist_is_caught(words: list[str]) -> None:
    with pytest.raises(AssertionError, match="README shows"):
        _parses(build_parser(), words, "spawn")


def test_every_dev_command_shown_exists() -> None:
    dev = (README.parent / "dev").read_text(encoding="utf-8")
    cases = set(re.findall(r"^\s*([a-z|]+)\)", dev, flags=re.MULTILINE))
    known = {name for case in cases for name in case.split("|")}
    shown = _invocations("./dev")
    assert shown
    for words in shown:
        assert words and words[0] in known, f"README shows `./dev {' '.join(words)}`; ./dev knows {known}"
