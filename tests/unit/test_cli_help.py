"""What people expect from a CLI: every subcommand's --help has a one-line description and
examples, every example parses, and shell completion scripts are generated for bash, zsh, fish."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pytest

from controller.cli import build_parser, main
from controller.cli_help import subcommands


def _examples(epilog: str) -> list[str]:
    block = epilog.split("examples:", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_every_subcommand_has_a_one_line_description_and_examples() -> None:
    missing = []
    for path, one_line, parser in subcommands(build_parser()):
        help_text = parser.format_help()
        if not one_line or "\n" in one_line or not parser.description:
            missing.append(f"{path}: no one-line description")
        if "examples:" not in help_text or not _examples(parser.epilog or ""):
            missing.append(f"{path}: no examples in --help")
    assert not missing, "\n".join(missing)


def test_every_example_parses() -> None:
    parser = build_parser()
    bad = []
    for path, _one_line, sub in subcommands(parser):
        for line in _examples(sub.epilog or ""):
            if not line.startswith("spawn "):
                continue  # e.g. a shell line around a spawn command
            # the spawn part of a shell line; an explanation follows two spaces or a #
            command = re.split(r"\s{2,}", line.split(" > ", 1)[0].split(" | ", 1)[0])[0]
            argv = shlex.split(command, comments=True)[1:]
            try:
                parser.parse_args(argv)
            except SystemExit:
                bad.append(f"{path}: {line}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_name_the_commands(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for command in ("launch", "bundle", "defaults", "extend", "--agent-bundle"):
        assert command in script, (shell, command)
    binary = shutil.which(shell)
    if binary is not None:  # a syntax check where the shell is installed (bash is, everywhere)
        proc = subprocess.run([binary, "-n"], input=script, capture_output=True, text=True, timeout=60,
                              check=False)
        assert proc.returncode == 0, proc.stderr


def test_completion_refuses_an_unknown_shell(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["completion", "cmd.exe"])
    assert info.value.code == 2
    assert "bash" in capsys.readouterr().err
