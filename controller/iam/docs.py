"""Keep docs/iam.md's generated block (the CLI policy additions) in step with the code.

``python -m controller.iam.docs`` rewrites the block between ``<!-- cli-policy-additions -->`` and
``<!-- /cli-policy-additions -->``; ``tests/unit/test_iam_docs.py`` fails when it drifts (e.g.
after a new ``declare(...)`` in controller/permissions.py).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from .cli_policy import ADDITIONS_SID, minimal_policy

BEGIN = "<!-- cli-policy-additions -->"
END = "<!-- /cli-policy-additions -->"
DOC = Path(__file__).resolve().parents[2] / "docs" / "iam.md"


def additions_markdown() -> str:
    stmt = next(s for s in minimal_policy()["Statement"] if s.get("Sid") == ADDITIONS_SID)
    text = ", ".join(f"`{a}`" for a in stmt["Action"]) + "."
    return "\n".join(textwrap.wrap(text, width=100, break_on_hyphens=False))


def render(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{additions_markdown()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    path = Path(argv[0]) if argv else DOC
    original = path.read_text(encoding="utf-8")
    updated = render(original)
    if updated != original:
        path.write_text(updated, encoding="utf-8")
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
