"""Pure core, thin edges: the decision, contract, policy-composition and launch-plan modules import
no AWS or HTTP library, directly or through anything else of ours they import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE = (
    "spored.contract", "spored.errors", "spored.config", "spored.decide", "spored.policy",
    "spored.failsafe", "spored.permission_proof",
    "controller.iam.templates", "controller.iam.agent_policy", "controller.iam.document",
    "controller.iam.compose", "controller.launch.plan", "controller.launch.userdata",
)
FORBIDDEN = ("boto3", "botocore", "requests", "urllib3", "moto")


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (not imported at run time)."""
    out: list[ast.AST] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def _imports(module: str) -> set[str]:
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    package = module.rsplit(".", 1)[0]
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                found.add(node.module)
    return found


def _closure(module: str) -> set[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in _imports(current):
            if name.split(".")[0] in ("spored", "controller"):
                candidate = ROOT / (name.replace(".", "/") + ".py")
                if candidate.exists() or (ROOT / name.replace(".", "/") / "__init__.py").exists():
                    todo.append(name)
            else:
                seen.add(name)
    return seen


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_aws_or_http_library(module: str) -> None:
    bad = sorted(n for n in _closure(module) if n.split(".")[0] in FORBIDDEN)
    assert not bad, f"{module} pulls in {bad}"


def test_the_check_sees_an_aws_import() -> None:
    assert any(n.split(".")[0] == "boto3" for n in _closure("controller.aws"))
