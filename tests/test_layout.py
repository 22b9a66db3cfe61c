"""The package's imports point one way: no cycles (lazy and type-checking imports included), and
``core/`` imports nothing outside ``core/``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import distilsent

PACKAGE = Path(distilsent.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every distilsent module → the distilsent modules it imports anywhere in its source."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([base] if base else [])])
                found = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in found:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("distilsent") and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_core_imports_nothing_outside_core() -> None:
    outside = {
        module: sorted(
            t for t in targets if not t.startswith("distilsent.core") and t != "distilsent._version"
        )
        for module, targets in import_graph().items()
        if module.startswith("distilsent.core")
    }
    assert {m: t for m, t in outside.items() if t} == {}


def test_no_private_names_are_imported_across_packages() -> None:
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("distilsent"):
                same_package = (node.module or "").rpartition(".")[0] == name.rpartition(".")[0]
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                assert same_package or not private, f"{name} imports {private} from {node.module}"


def test_import_distilsent_loads_no_torch_or_transformers() -> None:
    code = "import sys, distilsent; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_old_module_paths_still_import_or_say_where_they_went() -> None:
    import importlib
    import warnings

    import pytest

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("distilsent.api")
    assert old is importlib.import_module("distilsent.core.classifier")
    assert any("moved to distilsent.core.classifier" in str(w.message) for w in caught)
    with pytest.raises(ModuleNotFoundError, match=r"distilsent\.training\.train"):
        importlib.import_module("distilsent.train")
    assert callable(distilsent.train)


def test_py_typed_is_shipped() -> None:
    assert (PACKAGE / "py.typed").is_file()
