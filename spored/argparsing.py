"""The command-line parser both programs use: argparse, with usage errors on our exit path.

argparse exits 2 on a usage error already; this class makes that explicit (``ExitStatus.USAGE``)
and keeps one wording for both `spawn` and `spored`.
"""

from __future__ import annotations

import argparse
import sys

from spored.exit_codes import ExitStatus


class Parser(argparse.ArgumentParser):
    """argparse that exits 2 through our own error path with a clear message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(ExitStatus.USAGE)
