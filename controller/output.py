"""Where the CLI's results go: JSON on stdout with --json, rich tables on a terminal,
plain lines otherwise. Logs and progress go to stderr and never mix with results."""

from __future__ import annotations

import argparse
import io
import json as jsonlib
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from controller.error_hints import hint_for
from spored.errors import SpawnError


def add_json_flag(parser: argparse.ArgumentParser,
                  help: str = "machine-readable output on stdout") -> None:
    """``--json`` (every command has it): results as JSON on stdout, see ``Output``."""
    parser.add_argument("--json", action="store_true", help=help)


class Output:
    def __init__(self, *, json: bool, stdout: TextIO | None = None,
                 stderr: TextIO | None = None) -> None:
        self.json = json
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr

    @property
    def interactive(self) -> bool:
        return not self.json and self.stderr.isatty()

    def result(self, data: dict[str, Any], human: Callable[[TextIO], None] | None = None) -> None:
        """Print a command's result: JSON when asked, else the human renderer (or pretty JSON).

        A result is always one JSON object (shapes: docs/json.md), never a bare list."""
        if not isinstance(data, dict):
            raise TypeError(f"a command result must be a JSON object, not {type(data).__name__}")
        if self.json or human is None:
            self.stdout.write(jsonlib.dumps(data, indent=None if self.json else 2,
                                            sort_keys=False, default=str) + "\n")
        else:
            human(self.stdout)
        self.stdout.flush()

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]],
              title: str | None = None) -> None:
        """A human table: rich on a terminal, tab-separated lines otherwise."""
        if self.stdout.isatty():
            from rich.console import Console
            from rich.table import Table

            table = Table(title=title)
            for col in columns:
                table.add_column(col)
            for row in rows:
                table.add_row(*("" if v is None else str(v) for v in row))
            Console(file=self.stdout).print(table)
        else:
            if title:
                self.stdout.write(f"# {title}\n")
            self.stdout.write("\t".join(columns) + "\n")
            for row in rows:
                self.stdout.write("\t".join("" if v is None else str(v) for v in row) + "\n")

    def warn(self, message: str) -> None:
        self.stderr.write(f"warning: {message}\n")
        self.stderr.flush()

    def info(self, message: str) -> None:
        """A progress or informational line for people (stderr, never in --json stdout)."""
        self.stderr.write(message + "\n")
        self.stderr.flush()

    def error(self, exc: SpawnError) -> None:
        exc.hint = hint_for(exc)
        if self.json:
            self.stdout.write(jsonlib.dumps(exc.to_dict()) + "\n")
        self.stderr.write(f"error: {exc.message}\n")
        if exc.hint:
            self.stderr.write(f"hint: {exc.hint}\n")
        self.stderr.flush()

    @contextmanager
    def progress(self, steps: Sequence[str]) -> Iterator[Callable[[str, str], None]]:
        """Live step display on a terminal; plain `step: message` lines on stderr otherwise.

        Yields ``update(step, message)``.
        """
        if self.interactive:
            from rich.console import Console
            from rich.live import Live
            from rich.table import Table

            state = {s: ("pending", "") for s in steps}

            def render() -> Table:
                t = Table.grid(padding=(0, 1))
                marks = {"pending": "[dim]·[/]", "active": "[yellow]…[/]", "done": "[green]✓[/]"}
                for s in steps:
                    status, msg = state[s]
                    t.add_row(marks.get(status, "•"), s, msg)
                return t

            with Live(render(), console=Console(file=self.stderr), refresh_per_second=8) as live:
                def update(step: str, message: str) -> None:
                    for s in steps:
                        if s == step:
                            break
                        if state[s][0] != "done":
                            state[s] = ("done", state[s][1])
                    state[step] = ("done" if message.startswith("done") else "active", message)
                    live.update(render())
                yield update
        else:
            def update(step: str, message: str) -> None:
                if not self.json:
                    self.stderr.write(f"{step}: {message}\n")
                    self.stderr.flush()
            yield update


class Relay(Output):
    """The Output of a command run inside another (`spawn sandbox` and `spawn selftest` run
    launch): results are kept in ``results``, warnings and information lines go to the caller's
    ``on_warning`` and ``on_info`` (default: ``on_warning``), progress steps to ``on_step``, and
    errors are left to the caller, which reports them itself. Nothing is written anywhere."""

    def __init__(self, *, on_warning: Callable[[str], None], on_info: Callable[[str], None] | None = None,
                 on_step: Callable[[str, str], None] | None = None) -> None:
        super().__init__(json=True, stdout=io.StringIO(), stderr=io.StringIO())
        self._on_warning = on_warning
        self._on_info = on_info or on_warning
        self._on_step = on_step or (lambda _step, _message: None)
        self.results: list[dict[str, Any]] = []

    def result(self, data: dict[str, Any], human: Callable[[TextIO], None] | None = None) -> None:
        self.results.append(data)

    def warn(self, message: str) -> None:
        self._on_warning(message)

    def info(self, message: str) -> None:
        self._on_info(message)

    def error(self, exc: SpawnError) -> None:
        """The caller reports the error."""

    @contextmanager
    def progress(self, steps: Sequence[str]) -> Iterator[Callable[[str, str], None]]:
        yield self._on_step
