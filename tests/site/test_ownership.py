"""The site's Redis state has one owner, ``dmg/site/``: nobody else spells its keys,
catches redis-py's errors or reaches into it from below (grep over the source)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The product and the benchmarks; tests may inspect raw state (through SiteKeys).
SOURCE_DIRS = ("dmg", "workers", "dispatcher", "settings", "bench")
SITE = ROOT / "dmg" / "site"

#: A key of the site spelled by hand: ``state.key("…")``, ``"shard:"`` ..., ``f"dmg:{…}"``.
KEY_SPELLING = re.compile(
    r"""\.key\(\s*["']|["'](?:shard|hb|load|limit|queued|running|started|outbox|plan|bw|bwtat"""
    r"""|cancelled|split|parts|commit):|\bf?["']dmg:\{""")
#: Catching or importing redis-py's errors.
REDIS_ERRORS = re.compile(
    r"""\bredis(?:_lib)?\.(?:exceptions\b|[A-Za-z]*Error\b)|from redis\.exceptions import"""
    r"""|from redis import [^\n]*Error""")

#: Modules outside dmg/site allowed to spell a key, and why.
KEY_ALLOWED = {
    "settings/celery.py": "settings imports nothing of ours: it spells Celery's prefix "
                          "dmg:<gateway>:celery: (dmg.site.keys lists it) for kombu's global_keyprefix",
}
#: Modules outside dmg/site allowed to name redis-py's errors, and why (none today: Celery
#: and kombu glue catches kombu's errors, not redis-py's).
ERRORS_ALLOWED: dict[str, str] = {}


def _sources() -> list[Path]:
    found = []
    for top in SOURCE_DIRS:
        found += [p for p in sorted((ROOT / top).rglob("*.py")) if SITE not in p.parents]
    return found


def _offenders(pattern: re.Pattern[str], allowed: dict[str, str]) -> list[str]:
    hits = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        if rel in allowed:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{rel}:{number}: {line.strip()}")
    return hits


def test_only_dmg_site_spells_a_key_of_the_site() -> None:
    assert _offenders(KEY_SPELLING, KEY_ALLOWED) == []


def test_only_dmg_site_names_redis_errors() -> None:
    assert _offenders(REDIS_ERRORS, ERRORS_ALLOWED) == []


def test_the_guards_find_what_they_look_for() -> None:
    """The patterns match the spellings they forbid (a guard that matches nothing passes)."""
    for line in ('state.key("shard", s)', 'f"dmg:{gateway}:x"', 'x = "hb:" + node', "'queued:'"):
        assert KEY_SPELLING.search(line), line
    for line in ("except redis.RedisError:", "except redis_lib.ConnectionError:",
                 "from redis.exceptions import WatchError", "from redis import ResponseError"):
        assert REDIS_ERRORS.search(line), line
    for line in ('print(f"dmg:    {x}")', "state.keys.shard(s)", "except BrokerError:"):
        assert not KEY_SPELLING.search(line) and not REDIS_ERRORS.search(line), line


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_site_package_imports_nothing_above_it_and_has_no_cycle() -> None:
    """dmg/site and dmg/ids import no connector, transfer, worker or dispatcher code, and
    no module of dmg/site imports one that imports it back (at any depth)."""
    modules = {f"dmg.site.{p.stem}": p for p in SITE.glob("*.py") if p.stem != "__init__"}
    modules["dmg.ids"] = ROOT / "dmg" / "ids.py"
    graph = {}
    for name, path in modules.items():
        imported = _imports(path)
        above = sorted(i for i in imported
                       if i.startswith(("dmg.connectors", "dmg.transfer", "workers", "dispatcher")))
        assert above == [], f"{name} imports {above}"
        graph[name] = {m for m in modules if m != name and m in imported}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    assert [name for name in graph if reaches(name, name, set())] == []
