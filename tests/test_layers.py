"""The layers of the tree, read from the source: arrows point one way, no package cycle.

A *package* here is a top-level one (``workers``, ``dispatcher``, ``settings``) or a
first-level one of ``dmg`` (``dmg.site``, ``dmg.cloud``, ``dmg.errors``…). Every
``import`` of every module is read with :mod:`ast` (imports inside functions too: a
cycle hidden in a function is still a cycle).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = ("dmg", "workers", "dispatcher", "settings")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for top in TOP for p in (ROOT / top).rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m in known}


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "dmg" else parts[0]


@pytest.fixture(scope="module")
def arrows() -> dict[str, set[str]]:
    """package -> the packages its modules import (self excluded)."""
    modules = _modules()
    known = set(modules)
    out: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for target in _imports(name, path, known):
            if _package(target) != _package(name):
                out[_package(name)].add(target)
    return out


def _packages_of(targets: set[str]) -> set[str]:
    return {_package(t) for t in targets}


def test_no_cycle_between_packages(arrows: dict[str, set[str]]) -> None:
    graph = {p: _packages_of(t) - {"dmg"} for p, t in arrows.items()}  # dmg/__init__ is the version
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("package cycle: " + " -> ".join([*path[path.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for package in sorted(graph):
        if package not in state:
            visit(package)


#: What each low layer may import, beyond the standard library and third parties.
LEAVES = {
    "dmg.errors": set(),
    "dmg.ids": set(),
    "settings": {"dmg.errors"},
    "dmg.connectors": {"dmg.errors", "dmg.ids"},
    "dmg.shards": {"dmg.connectors", "dmg.errors"},
    "dmg.site": {"dmg.attempt_ends", "dmg.errors", "dmg.ids", "dmg.registration", "dmg.shards", "settings"},
}


@pytest.mark.parametrize("package", sorted(LEAVES))
def test_low_layers_import_only_below_them(arrows: dict[str, set[str]], package: str) -> None:
    extra = _packages_of(arrows.get(package, set())) - LEAVES[package] - {"dmg"}
    assert not extra, f"{package} imports {sorted(extra)}: it must stay below them (README, Architecture)"


def test_the_cloud_knows_nothing_of_the_site(arrows: dict[str, set[str]]) -> None:
    """The cloud is a central service: it never touches a site's Redis, a connector or a worker."""
    forbidden = {"dmg.site", "dmg.transfer", "dmg.connectors", "workers", "dispatcher", "dmg.cli"}
    found = _packages_of(arrows.get("dmg.cloud", set())) & forbidden
    assert not found, f"dmg.cloud imports {sorted(found)}"


def test_the_dispatcher_uses_only_the_workers_published_names(arrows: dict[str, set[str]]) -> None:
    """The dispatcher sends tasks by name; it never imports the worker's code."""
    into_workers = {t for t in arrows.get("dispatcher", set()) if _package(t) == "workers"}
    assert into_workers <= {"workers.names"}, sorted(into_workers)


def test_shipped_code_never_imports_tests_or_bench() -> None:
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and not node.level:
                assert (node.module or "").split(".")[0] not in {"tests", "bench"}, (name, node.module)
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] not in {"tests", "bench"} for a in node.names), name


def test_the_checks_see_the_tree(arrows: dict[str, set[str]]) -> None:
    """Guard against a reader that sees nothing (a wrong ROOT passes every test above)."""
    assert {"workers", "dispatcher", "dmg.cloud", "dmg.site"} <= set(arrows)
    assert "dmg.site" in _packages_of(arrows["workers"])
