"""The README and docs/ describe the code: generated tables are current, every command shown
exists, and the README stays short enough to read in five minutes."""

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

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
REQUIRED_BLOCKS = {"templates", "tags", "reasons", "exit-codes", "sandbox-events", "commands",
                   "agent-exit-codes", "agent-config", "agent-policy", "cli-policy-additions"}
README_MAX_BYTES = 12 * 1024


def _text() -> str:
    """README.md and every document under docs/: what a reader sees."""
    return "\n".join(p.read_text(encoding="utf-8") for p in [README, *DOCS])


def _code_blocks(text: str, languages: tuple[str, ...] | None = None) -> list[str]:
    blocks = re.findall(r"^```([a-z]*)\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    return [body for lang, body in blocks if languages is None or lang in languages]


def _invocations(program: str) -> list[list[str]]:
    """Every `program ...` line in the shell blocks of the README and docs/, split like a shell would."""
    found: list[list[str]] = []
    blocks = [(b, False) for b in _code_blocks(_text(), languages=("sh",))]
    blocks += [(b, True) for b in _code_blocks(_text(), languages=("console",))]
    for block, console in blocks:  # in a console block, only `$ ` lines are commands
        joined = block.replace("\\\n", " ")
        for raw in joined.splitlines():
            if console and not raw.startswith("$ "):
                continue
            line = raw.strip().removeprefix("$ ")
            for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", line):
                if not part.startswith(program):
                    continue
                words = shlex.split(part, comments=True)
                words = list(itertools.takewhile(lambda w: not w.startswith((">", "<", "2>")), words))
                if words and words[0] == program:
                    found.append(words[1:])
    return found


def _parses(parser: argparse.ArgumentParser, words: list[str], program: str) -> None:
    """The real parser accepts ``words``: commands, subcommands and flags all exist."""
    shown = " ".join([program, *words])
    try:
        args = parser.parse_args(words)
    except SystemExit as exc:
        if exc.code == 0 and words in (["--version"], ["--help"]):
            return  # argparse's own actions end the program with success
        raise AssertionError(f"README shows `{shown}`, which the {program} parser refuses") from None
    assert getattr(args, "command", None), f"README shows `{shown}` without a command"


@pytest.mark.parametrize("document", readme.DOCUMENTS, ids=lambda p: p.name)
def test_generated_tables_are_current(document: Path) -> None:
    text = document.read_text(encoding="utf-8")
    assert readme.render(text) == text, f"{document.name} is stale: run `python -m controller.readme`"


def test_every_generated_table_is_present_in_docs() -> None:
    found = {name: doc for doc in readme.DOCUMENTS
             for name in readme.blocks(doc.read_text(encoding="utf-8"))}
    assert set(found) >= REQUIRED_BLOCKS
    assert set(readme.GENERATORS) >= REQUIRED_BLOCKS
    # Reference tables live in docs/, the README stays an introduction.
    assert all(doc.parent.name == "docs" for doc in found.values()), found


def test_readme_is_short() -> None:
    assert len(README.read_bytes()) <= README_MAX_BYTES


def test_readme_links_to_documents_that_exist() -> None:
    links = re.findall(r"\]\(((?:docs|spored)/[^)#]+)", README.read_text(encoding="utf-8"))
    assert links
    for link in links:
        assert (ROOT / link).is_file(), f"README links to {link}, which does not exist"


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


def _section(title: str) -> str:
    return README.read_text(encoding="utf-8").split(f"\n## {title}", 1)[1].split("\n## ", 1)[0]


def test_readme_order_for_a_newcomer() -> None:
    headings = re.findall(r"^## (.+)$", README.read_text(encoding="utf-8"), flags=re.MULTILINE)
    order = ["Install", "Your first real launch", "Try it without an AWS account", "The tests"]
    assert [h for h in headings if any(h.startswith(o) for o in order)] == [
        next(h for h in headings if h.startswith(o)) for o in order]


def test_sandbox_and_tests_are_the_dev_commands() -> None:
    sandbox = [line.split("#")[0].strip() for block in _code_blocks(_section("Try it without"))
               for line in block.splitlines()]
    assert "./dev sandbox" in sandbox
    tests = [line.strip() for block in _code_blocks(_section("The tests")) for line in block.splitlines()]
    assert tests == ["./dev test"]
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
