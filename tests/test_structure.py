"""The package's shape: no import cycles, and the bottom layers (settings, catalog, schemas) import nothing above them.

Imports are read from the source (every `import` and `from ... import`, inside functions and
under TYPE_CHECKING too), so an import moved into a function to dodge a cycle still counts.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "clarion"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The clarion modules `name` imports (a package's __init__ counts when a name is taken from it)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            # `from pkg import sub` imports pkg/__init__ and, if sub is a module, the module
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


@functools.cache
def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    graph = {name: imports_of(name, path, known) for name, path in mods.items()}
    for name, deps in graph.items():  # `from a.b import c` also runs a/__init__ and a/b/__init__
        for dep in list(deps):
            parts = dep.split(".")
            for i in range(2, len(parts)):
                parent = ".".join(parts[:i])
                if parent in known and not name.startswith(parent + ".") and parent != name:
                    deps.add(parent)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_through_others() -> None:
    graph = import_graph()
    found = cycles(graph)
    described = [
        " <-> ".join(c) + "\n  " + "\n  ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c) for c in found
    ]
    assert not found, "import cycles:\n" + "\n".join(described)


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("clarion.topology.settings", ()),
        ("clarion.topology.catalog", ("clarion.topology.settings", "clarion.schemas")),  # the value types it names
        ("clarion.logs", ()),
    ],
)
def test_the_bottom_layers_import_nothing_above_them(module: str, allowed: tuple[str, ...]) -> None:
    deps = import_graph()[module]
    above = sorted(d for d in deps if not any(d == a or d.startswith(a + ".") for a in allowed))
    assert not above, f"{module} imports {above}"


def test_schemas_import_only_schemas() -> None:
    graph = import_graph()
    outside = {
        name: sorted(d for d in deps if not d.startswith("clarion.schemas"))
        for name, deps in graph.items()
        if name.startswith("clarion.schemas")
    }
    assert not {k: v for k, v in outside.items() if v}, outside
