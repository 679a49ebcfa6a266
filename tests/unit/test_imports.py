"""The import graph of src/loraforge, read from the source (no module is executed): no cycles, and
dependencies point down as ARCHITECTURE.md says.

"Module level" means what runs when a module is imported (not inside a function, not under
``if TYPE_CHECKING``); heavy libraries are allowed inside functions, where the CLI's fast paths
never reach them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import pytest

SRC = Path(__file__).parents[2] / "src"
HEAVY = ("torch", "transformers", "peft", "safetensors", "accelerate", "bitsandbytes")
NO_HEAVY_AT_IMPORT = ("loraforge.config", "loraforge.runs", "loraforge.deploy", "loraforge.workflows", "loraforge.cli")
"""Imported by the CLI's fast paths (``--help``, deploy, config) or by code that must run without torch."""
# Below config sit only errors (the user-error classes) and methods (the torch-free method registry).
ABOVE_CONFIG = tuple(f"loraforge.{p}" for p in ("runs", "data", "models", "adapters", "train", "eval", "export",
                                                 "serve", "deploy", "bench", "workflows", "cli", "localize", "pii",
                                                 "hardware"))
NEVER_IMPORTS = {
    "loraforge.export": ("loraforge.train", "loraforge.workflows", "loraforge.cli"),
    "loraforge.serve": ("loraforge.train", "loraforge.workflows", "loraforge.cli"),
    "loraforge.deploy": ("loraforge.train", "loraforge.workflows", "loraforge.cli"),
    "loraforge.runs": ("loraforge.data", "loraforge.models", "loraforge.adapters", "loraforge.train", "loraforge.eval",
                       "loraforge.workflows", "loraforge.cli"),
    "loraforge.errors": ("loraforge.",),
    "loraforge.methods": ("loraforge.config", *ABOVE_CONFIG),
    "loraforge.config": ABOVE_CONFIG,
    **{f"loraforge.{block}": ("loraforge.workflows", "loraforge.cli")
       for block in ("data", "models", "adapters", "train", "eval")},
    "loraforge.bench": ("loraforge.cli",),
    "loraforge.workflows": ("loraforge.cli",),
}
COMPAT_ALIASES: set[str] = set()  # old import paths kept for callers not yet switched


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SRC.joinpath("loraforge").rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, top: bool) -> Iterator[tuple[ast.AST, bool]]:
    """(import node, at module level?) for every import under ``node``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, top
        inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield from _walk(child, inner)


def _targets(name: str, node: ast.AST) -> list[str]:
    """Absolute names a node imports: a submodule when ``from pkg import sub`` names one."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:
        package = name if MODULES.get(name, Path()).name == "__init__.py" else name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
    return subs or [base]


@lru_cache(maxsize=None)
def imports(name: str, module_level_only: bool) -> frozenset[str]:
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    return frozenset(t for node, top in _walk(tree, True) if top or not module_level_only for t in _targets(name, node))


def _ours(target: str) -> str | None:
    """The module of ours a target names (``loraforge.x.y`` may be a module or a name in ``loraforge.x``)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


@lru_cache(maxsize=None)
def graph(module_level_only: bool) -> dict[str, set[str]]:
    return {m: {o for t in imports(m, module_level_only) if (o := _ours(t)) and o != m} for m in MODULES}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".") or (prefix.endswith(".") and module.startswith(prefix))


def test_the_graph_reader_sees_imports():
    """The reader itself: it must find known edges, or every test below would pass on an empty graph."""
    g = graph(module_level_only=True)
    assert "loraforge.config" in g["loraforge.runs.rundir"]
    assert "loraforge.eval.inference" in graph(module_level_only=False)["loraforge.workflows.train"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_at_module_level():
    cycle = find_cycle(graph(module_level_only=True))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_between_modules_even_inside_functions():
    """Two modules that import each other, even one of them inside a function, are one module in two files."""
    edges = {m: set(t) for m, t in graph(module_level_only=False).items() if m not in COMPAT_ALIASES}
    cycle = find_cycle(edges)
    assert cycle is None, "modules import each other: " + " -> ".join(cycle or [])


def test_no_import_cycle_between_packages_even_inside_functions():
    """Packages (data, eval, workflows, ...) depend on each other one way only, counting the imports
    inside functions too: a deferred import hides a cycle from the interpreter, not from a reader."""
    def package(m: str) -> str:
        parts = m.split(".")
        return ".".join(parts[:2]) if (SRC / Path(*parts[:2])).is_dir() else m

    packages: dict[str, set[str]] = {}
    for m, targets in graph(module_level_only=False).items():
        if m in COMPAT_ALIASES:
            continue
        packages.setdefault(package(m), set()).update(package(t) for t in targets if package(t) != package(m))
    cycle = find_cycle(packages)
    assert cycle is None, "packages import each other: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("prefix", NO_HEAVY_AT_IMPORT)
def test_fast_path_modules_import_no_torch(prefix):
    """Nothing reachable at import time from these modules imports torch & co. at module level."""
    g = graph(module_level_only=True)
    seen, todo = set(), [m for m in MODULES if _within(m, prefix)]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        heavy = sorted(t for t in imports(m, True) if t.split(".")[0] in HEAVY)
        assert not heavy, f"{m} imports {heavy} at module level (reached from {prefix}); import it inside the function"
        todo += g[m]


@pytest.mark.parametrize("prefix", sorted(NEVER_IMPORTS))
def test_dependencies_point_down(prefix):
    forbidden = NEVER_IMPORTS[prefix]
    for m, targets in graph(module_level_only=False).items():
        if not _within(m, prefix):
            continue
        bad = sorted(t for t in targets if any(_within(t, f) for f in forbidden) and not _within(t, prefix))
        assert not bad, f"{m} imports {bad}; {prefix} may not import {', '.join(forbidden)}"


def test_workflow_modules_do_not_import_each_other():
    """What two workflows share lives below them (data.splits, eval.inference, runs)."""
    for m, targets in graph(module_level_only=False).items():
        if _within(m, "loraforge.workflows") and m != "loraforge.workflows":
            bad = sorted(t for t in targets if _within(t, "loraforge.workflows") and t != m)
            assert not bad, f"{m} imports {bad}"


def test_the_pii_packages_lazy_exports_are_the_names_its_type_checking_imports_give():
    """``loraforge.pii`` loads its exports on first use; the ``if TYPE_CHECKING`` imports show them to
    type checkers, and must name the same things from the same modules."""
    import loraforge.pii as pii

    tree = ast.parse((SRC / "loraforge" / "pii" / "__init__.py").read_text(encoding="utf-8"))
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    declared = {node.module.rsplit(".", 1)[1]: sorted(a.name for a in node.names)
                for node in block.body if isinstance(node, ast.ImportFrom)}
    assert declared == {module: sorted(names) for module, names in pii._EXPORTS.items()}
    assert all(getattr(pii, name) is not None for name in pii.__all__)
