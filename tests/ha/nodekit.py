"""Helpers for node, dispatcher and worker failure tests on an :class:`EmbeddedSite`.

- :func:`mixed_copy`: one pipeline, two throttled activities: a folder of binary
  files to a file store, and CSV files to tables of a SQL store (SQLite), so
  both kinds of sink see every failure;
- :func:`assert_once`: the run Succeeded, each file is in the file sink once and
  byte for byte (no staging leftover), each table holds its rows exactly once, and
  the cloud recorded each shard succeeded with its files and bytes;
- :func:`site_state` (the site's Redis), :func:`dispatcher_of`, and
  :func:`wait_running_elsewhere`, which measures how long the shards of a killed
  node took to run again on other nodes.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmg.cli.demo import KIB, compare_trees, generate_tree
from dmg.cli.runview import shards_of
from dmg.cloud.client import CloudClient
from dmg.embedded.site import EmbeddedSite
from dmg.shards.status import STATE_DONE, STATE_RUNNING
from dmg.site.boundary import SiteRedis
from dmg.site.state import SiteState
from tests.ha.sitekit import wait_for


@dataclass
class MixedCopy:
    pipeline: str
    source: Path
    sink: Path
    tables_source: Path
    db: Path
    files: int
    rows: dict[str, list[tuple[int, str]]] = field(default_factory=dict)


def mixed_copy(client: CloudClient, site: EmbeddedSite, root: Path, *, files: int = 24, tables: int = 8,
               rows: int = 150, bandwidth: int = 48 * KIB, name: str = "mixed") -> MixedCopy:
    """Stores and a pipeline ``name``: ``folder`` (file -> file, ``files`` files of 8-24 KiB)
    and ``tables`` (``tables`` CSV files of ``rows`` rows -> SQLite tables t_1 ...), each at
    ``bandwidth`` bytes/s."""
    source, sink, csv, db = root / "source", root / "sink", root / "csv", root / "sink.db"
    generate_tree(source, small_files=files, large_files=0, small_size=(8 * KIB, 24 * KIB))
    sink.mkdir(parents=True)
    csv.mkdir(parents=True)
    copy = MixedCopy(name, source, sink, csv, db, files)
    for t in range(1, tables + 1):
        table = f"t_{t}"
        copy.rows[table] = [(t * 100_000 + n, f"row {n} of {table} " + "x" * 30) for n in range(rows)]
        (csv / table).write_text("id,name\n" + "".join(f"{i},{text}\n" for i, text in copy.rows[table]))
    stores: list[tuple[str, str, str, dict[str, Any]]] = [
        ("src", "file", str(source), {}), ("dst", "file", str(sink), {}),
        ("csv", "file", str(csv), {}), ("sql", "sql", f"sqlite:///{db}", {"create_table": True})]
    for suffix, kind, location, store_options in stores:
        client.add_store({"name": f"{name}-{suffix}", "type": kind, "location": location,
                          "options": store_options})
    options = {"bandwidth": bandwidth} if bandwidth else {}
    client.create_pipeline({"name": name, "gateway": site.gateway, "activities": [
        {"name": "folder", "source": {"store": f"{name}-src", "path": ""},
         "sink": {"store": f"{name}-dst", "path": ""}, "options": options},
        {"name": "tables", "source": {"store": f"{name}-csv", "path": ""},
         "sink": {"store": f"{name}-sql", "path": ""}, "options": options}]})
    return copy


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql))


def assert_once(client: CloudClient, run_id: str, copy: MixedCopy) -> dict[str, Any]:
    """See the module docstring; returns the run."""
    run = client.run(run_id)
    assert run["status"] == "Succeeded", run
    diff = compare_trees(copy.source, copy.sink)
    assert diff.matches, diff.describe()
    for table, rows in copy.rows.items():
        got = query(copy.db, f"SELECT CAST(id AS INTEGER) AS n, name FROM {table} ORDER BY n")
        assert got == rows, f"{table}: {len(got)} rows, {len(rows)} expected"
    if copy.rows:
        markers = query(copy.db, "SELECT staging_id, target FROM dmg_commits")
        assert sorted(t for _s, t in markers) == sorted(copy.rows), markers  # one commit per table
        assert all("." not in s for s, _t in markers), markers  # keyed by shard, not attempt
    shards = shards_of(run)
    assert shards and {s["status"] for s in shards} == {"succeeded"}, shards
    for shard in shards:
        assert (shard["files"], shard["bytes"]) == (shard["files_total"], shard["bytes_total"]), shard
    assert sum(s["files"] for s in shards) == copy.files + len(copy.rows)
    return run


@contextlib.contextmanager
def site_state(site: EmbeddedSite) -> Iterator[SiteState]:
    client = SiteRedis.from_url(site.broker_url())
    try:
        yield SiteState(client, site.gateway)
    finally:
        client.close()


def dispatcher_of(state: SiteState) -> str | None:
    raw: Any = state.redis.get(state.keys.lease)
    return str(raw.decode()).rsplit(":", 1)[0] if raw else None


def successor_of(state: SiteState, old: str) -> str:
    """The dispatcher if it is not ``old``, else ""."""
    now = dispatcher_of(state)
    return now if now and now != old else ""


def epoch_of(state: SiteState) -> int:
    return int(state.redis.get(state.keys.epoch) or 0)


def work_of(state: SiteState, node: str) -> set[str]:
    return state.queued(node) | state.running(node)


def wait_running_elsewhere(state: SiteState, shard_ids: Iterable[str], dead: str, *, since: float,
                           timeout: float) -> float:
    """Wait until every shard in ``shard_ids`` that ``dead`` did not finish runs (or ran) on
    another node; returns the seconds from ``since`` (a ``time.monotonic()``)."""
    ids = []
    for shard_id in sorted(shard_ids):
        shard = state.shard(shard_id) or {}
        if not (shard.get("state") == STATE_DONE and shard.get("node") == dead):  # done before it died
            ids.append(shard_id)

    def moved() -> bool:
        for shard_id in ids:
            shard = state.shard(shard_id)
            if shard is None or shard["node"] in ("", dead):
                return False
            if shard["state"] not in (STATE_RUNNING, STATE_DONE):
                return False
        return True

    wait_for(moved, timeout=timeout, what=f"the shards of {dead} running elsewhere", interval=0.02)
    return time.monotonic() - since


def cloud_shards(client: CloudClient, run_id: str) -> dict[str, dict[str, Any]]:
    return {str(s["id"]): s for s in shards_of(client.run(run_id))}


def run_ended(client: CloudClient, run_id: str) -> bool:
    return client.run(run_id)["status"] in ("Succeeded", "Failed")
