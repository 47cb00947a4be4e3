"""Examples for every `spawn` subcommand's --help, and the walk that puts them in place.

A command module may set its own ``epilog`` (with an ``examples:`` block); commands that don't
get theirs from ``EXAMPLES`` here, keyed by the command path. ``tests/unit/test_cli_help.py``
checks that every subcommand's --help has a one-line description and examples.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

EXAMPLES: dict[str, tuple[str, ...]] = {
    "launch": (
        "spawn launch -t t3.micro --ttl 2h",
        "spawn launch -t g5.xlarge --idle-timeout 30m --spot --iam-policy s3:ReadOnly@my-bucket",
        "spawn launch -t t3.micro --ttl 1h --dry-run --json",
    ),
    "list": ("spawn list", "spawn list --all-regions --json", "spawn list --state stopped"),
    "status": ("spawn status i-0123456789abcdef0", "spawn status my-instance --json"),
    "extend": ("spawn extend i-0123456789abcdef0 +2h", "spawn extend my-instance 4h --json"),
    "terminate": ("spawn terminate i-0123456789abcdef0", "spawn terminate my-instance other --yes --json"),
    "stop": ("spawn stop my-instance", "spawn stop i-0123456789abcdef0 --json"),
    "start": ("spawn start my-instance", "spawn start my-instance --json"),
    "hibernate": ("spawn hibernate my-instance", "spawn hibernate my-instance --json"),
    "config": ("spawn config my-instance list", "spawn config my-instance set idle-timeout 45m"),
    "config get": ("spawn config my-instance get ttl", "spawn config my-instance get on-complete --json"),
    "config set": ("spawn config my-instance set idle-timeout 45m",
                   "spawn config my-instance set on-complete stop --json"),
    "config list": ("spawn config my-instance list", "spawn config my-instance list --json"),
    "connect": ("spawn connect my-instance", "spawn connect my-instance --command uptime"),
    "iam": ("spawn iam templates", "spawn iam cli-policy --scoped"),
    "iam templates": ("spawn iam templates", "spawn iam templates --json"),
    "iam show": ("spawn iam show s3:ReadOnly", "spawn iam show s3:ReadOnly@my-bucket/data/*"),
    "iam agent-policy": ("spawn iam agent-policy", "spawn iam agent-policy --json"),
    "iam lint": ("spawn iam lint policy.json", "spawn iam lint policy.json --json"),
    "iam cli-policy": ("spawn iam cli-policy", "spawn iam cli-policy --scoped"),
    "iam setup": ("spawn iam setup --dry-run", "spawn iam setup --json"),
    "iam roles": ("spawn iam roles", "spawn iam roles --region us-east-1 --json"),
    "iam cleanup": ("spawn iam cleanup", "spawn iam cleanup --yes"),
    "sandbox": ("spawn sandbox", "spawn sandbox --ttl 30s --spot-interruption-after 10s",
                "spawn sandbox --idle-timeout 20s --json"),
}


def subcommands(parser: argparse.ArgumentParser,
                path: tuple[str, ...] = ()) -> Iterator[tuple[str, str | None, argparse.ArgumentParser]]:
    """``(command path, one-line help, parser)`` for every subcommand, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield " ".join((*path, name)), helps.get(name), sub
                yield from subcommands(sub, (*path, name))


def add_examples(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand a description (its one-line help when it has none) and examples."""
    for path, one_line, sub in subcommands(parser):
        if not sub.description and one_line:
            sub.description = one_line[0].upper() + one_line[1:] + "."
        examples = EXAMPLES.get(path)
        if examples and "examples:" not in (sub.epilog or ""):
            block = "examples:\n" + "\n".join(f"  {line}" for line in examples)
            sub.epilog = f"{block}\n\n{sub.epilog}" if sub.epilog else block
            sub.formatter_class = argparse.RawDescriptionHelpFormatter
