"""Pure core, thin edges: the decision, contract, policy-composition and launch-plan modules import
no AWS or HTTP library, directly or through anything else of ours they import.

And one line between the two programs: the controller imports from the agent's package only its
shared contract (``CONTRACT``), never the agent's internals (daemon, cli, probes, ...)."""

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
# What both programs share: tag keys, durations and reasons, errors, exit codes, the agent's
# configuration schema, the failsafe's and the permission proof's formats, the argument parser,
# the log setup, and the package itself (its version).
CONTRACT = (
    "spored", "spored.contract", "spored.errors", "spored.exit_codes", "spored.config",
    "spored.failsafe", "spored.permission_proof", "spored.argparsing", "spored.logs",
)


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


def _imports(module: str, *, all_nodes: bool = False) -> set[str]:
    """What ``module`` imports at run time (``all_nodes``: also under TYPE_CHECKING); for
    ``from package import name``, both ``package`` and ``package.name``."""
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree) if all_nodes else _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            elif node.module:
                source = node.module
            else:
                continue
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names
                         if _is_module(f"{source}.{alias.name}"))
    return found


def _is_module(name: str) -> bool:
    path = ROOT / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _modules(package: str) -> list[str]:
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for p in (ROOT / package).rglob("*.py"))


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


def _agent_imports(module: str) -> set[str]:
    return {n for n in _imports(module, all_nodes=True) if n.split(".")[0] == "spored"}


@pytest.mark.parametrize("module", _modules("controller"))
def test_the_controller_imports_only_the_agents_contract(module: str) -> None:
    outside = sorted(_agent_imports(module) - set(CONTRACT))
    assert not outside, f"{module} imports agent internals {outside}; share them through {CONTRACT}"


@pytest.mark.parametrize("module", CONTRACT)
def test_the_contract_imports_nothing_else_of_the_agent(module: str) -> None:
    outside = sorted(_agent_imports(module) - set(CONTRACT))
    assert not outside, f"contract module {module} imports agent internals {outside}"


def test_the_boundary_check_sees_an_agent_internal() -> None:
    assert "spored.daemon" in _agent_imports("spored.cli")
    # `from spored.imds_client import ImdsClient`
    assert "spored.imds_client" in _agent_imports("spored.daemon")
    # `from spored import config`: the package and the module
    assert {"spored", "spored.config"} <= _agent_imports("controller.sandbox.agent")
