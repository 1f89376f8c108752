"""Fault hooks live only in the site under test.

Given the production :class:`EmbeddedSite` (what ``dmg up`` and ``dmg demo`` run) and
:class:`SiteUnderTest` (tests, bench), then only the latter can kill, stop, start or add
nodes, or stop and start the cloud and Redis; nothing in the shipped code imports it;
and a hook asked about a node the site lacks refuses with a clear error before touching
any process.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dmg.embedded.faults import SiteUnderTest
from dmg.embedded.site import EmbeddedSite
from dmg.errors import Conflict, NotFound
from settings import Settings

ROOT = Path(__file__).resolve().parents[2]
HOOKS = {"children", "pids", "node_pids", "kill_node", "stop_node", "start_node", "add_node",
         "stop_cloud", "start_cloud", "stop_redis", "start_redis"}


def test_the_production_site_has_no_fault_hooks() -> None:
    assert sorted(name for name in HOOKS if hasattr(EmbeddedSite, name)) == []


def test_the_site_under_test_adds_exactly_the_fault_hooks() -> None:
    added = {name for name in vars(SiteUnderTest) if not name.startswith("_")}
    assert added == HOOKS
    assert all(callable(getattr(SiteUnderTest, name)) for name in HOOKS)
    assert issubclass(SiteUnderTest, EmbeddedSite)


def test_no_shipped_module_imports_the_fault_hooks() -> None:
    importers = []
    for package in ("dmg", "workers", "dispatcher", "settings"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "dmg" / "embedded" / "faults.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                         else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                if any(name == "dmg.embedded.faults" for name in names):
                    importers.append(str(path.relative_to(ROOT)))
    assert importers == []


def test_hooks_refuse_a_node_the_site_lacks(tmp_path: Path) -> None:
    site = SiteUnderTest(Settings(data_dir=tmp_path), nodes=2)
    with pytest.raises(NotFound, match="no node 'node9'"):
        site.start_node("node9")
    with pytest.raises(Conflict, match="already has a node 'node1'"):
        site.add_node("node1")
    assert site.node_names == ["node1", "node2"]
    assert site.node_pids("node1") == [] and site.children() == [] and site.pids() == []
