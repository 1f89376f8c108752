"""The three parts of ``workers/`` keep their arrows one way, with no import cycle.

``workers.run`` (running an attempt) imports neither ``workers.agent`` (the node agent)
nor the Celery process (``workers.app``, ``workers.tasks``, ...) nor Celery itself;
the graph of imports between ``workers`` modules (top level and inside functions) has no
cycle; every module imports in a fresh interpreter.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import workers

ROOT = Path(workers.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _imports(path: Path, known: set[str]) -> set[str]:
    """The ``workers`` modules ``path`` imports (``from workers.x import y`` counts ``workers.x.y``
    when that is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in known}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, known) - {name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (a path that ends where it starts), or []."""
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> list[str]:
        if name in visiting:
            return [*visiting[visiting.index(name):], name]
        if name in done:
            return []
        visiting.append(name)
        for target in sorted(graph[name]):
            found = visit(target)
            if found:
                return found
        visiting.pop()
        done.add(name)
        return []

    for name in sorted(graph):
        found = visit(name)
        if found:
            return found
    return []


def test_the_parts_of_workers_exist_and_are_found() -> None:
    graph = _graph()
    assert {"workers.app", "workers.tasks", "workers.agent.node", "workers.run.attempt",
            "workers.run.shard", "workers.run.part"} <= set(graph)
    assert "workers.run.attempt" in graph["workers.run.shard"]


def test_workers_run_imports_neither_the_agent_nor_the_celery_process() -> None:
    graph = _graph()
    bad = {(name, target) for name, targets in graph.items() if name.startswith("workers.run")
           for target in targets if not target.startswith("workers.run")}
    assert bad == set()


def test_no_import_cycle_between_workers_modules() -> None:
    assert _cycle(_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_every_module_imports_in_a_fresh_interpreter_and_run_pulls_in_no_celery() -> None:
    """Each module first in its own interpreter would be slow; the run modules go first in
    one interpreter (then nothing of Celery or the agent may be loaded), then the rest."""
    names = sorted(_modules())
    run_first = [n for n in names if n.startswith("workers.run")] + [
        n for n in names if not n.startswith("workers.run")]
    script = (
        "import importlib, json, sys\n"
        f"names = {run_first!r}\n"
        "loaded_after_run = None\n"
        "for name in names:\n"
        "    if loaded_after_run is None and not name.startswith('workers.run'):\n"
        "        loaded_after_run = sorted(m for m in sys.modules\n"
        "            if m.split('.')[0] in ('celery', 'kombu') or m.startswith('workers.agent')\n"
        "            or m in ('workers.app', 'workers.tasks', 'workers.context'))\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(loaded_after_run))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          check=False, cwd=ROOT.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
