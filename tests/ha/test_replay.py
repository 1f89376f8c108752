"""Exactly once at the sink: a shard replayed after a crash leaves the sink as if it ran once.

Given two shards of CSV files, one to a file store and one to a SQL table store
(SQLite), each copied by an attempt in a process of its own at a throttled rate,
when that process is SIGKILLed (or SIGSTOPped) after it committed part of its
files, and the shard is replayed by a new attempt on another node, then the file
sink holds each file once, byte for byte, with no staging leftover once the dead
node has started again, and every table holds its rows exactly once (the SQL
commit marker is keyed by the shard, so the files the dead attempt committed are
not inserted again). A paused old attempt that wakes up commits nothing.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dmg.cli.demo import compare_trees
from dmg.connectors import StoreSpec, connector_for
from dmg.connectors.file import STAGING_PREFIX
from dmg.shards.status import OUTCOME_SUCCEEDED
from dmg.site.attempts import requeue
from dmg.site.state import SiteState
from tests.workers.support import shard_spec, wait_for
from workers.agent.reclaim import clean_staging, reclaim_at_start
from workers.run.reporter import MemoryReporter
from workers.run.shard import run_shard

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TABLES = [f"t_{i}" for i in range(1, 7)]
FILE_SHARD, SQL_SHARD = "run1-00000", "run1-00001"
OPTIONS = {"bandwidth": 6000, "parallel_files": 1}  # about 1.5 s per file of two shards


@pytest.fixture
def sinks(tmp_path: Path, state: SiteState) -> Iterator[dict[str, Any]]:
    """Source CSV files ``in/t_N`` and the two shards' specs, saved in the site state."""
    source = tmp_path / "src"
    rows: dict[str, list[tuple[int, str]]] = {}
    for index, table in enumerate(TABLES):
        rows[table] = [(index * 1000 + n, f"row {n} of {table} " + "x" * 40) for n in range(80)]
        path = source / "in" / table
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("id,name\n" + "".join(f"{i},{name}\n" for i, name in rows[table]))
    files, db = tmp_path / "files", tmp_path / "sink.db"
    files.mkdir()
    src = StoreSpec("src", "file", str(source))
    file_sink = StoreSpec("files", "file", str(files))
    sql_sink = StoreSpec("tables", "sql", f"sqlite:///{db}", {"create_table": True})
    state.save_shard(FILE_SHARD, shard_spec(FILE_SHARD, src, "in", file_sink, "", options=OPTIONS))
    state.save_shard(SQL_SHARD, shard_spec(SQL_SHARD, src, "in", sql_sink, "", options=OPTIONS))
    yield {"source": source / "in", "files": files, "db": db, "rows": rows}


def child(redis_url: str, shard_id: str, attempt: int, node: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.ha.shard_child", redis_url, "gw", shard_id,
                             str(attempt), node], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, text=True)


def committed_files(files: Path) -> list[str]:
    return sorted(p.name for p in files.iterdir() if not p.name.startswith(STAGING_PREFIX))


def staging_files(files: Path) -> list[str]:
    return sorted(p.name for p in files.iterdir() if p.name.startswith(STAGING_PREFIX))


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            return list(conn.execute(sql))
        except sqlite3.OperationalError:  # the table is not there yet
            return []


def markers(db: Path) -> list[tuple[Any, ...]]:
    return query(db, "SELECT staging_id, target, rows FROM dmg_commits ORDER BY target")


def assert_as_if_run_once(sinks: dict[str, Any]) -> None:
    diff = compare_trees(sinks["source"], sinks["files"])
    assert diff.matches, diff.describe()  # every file once, byte for byte; no staging leftover
    for table, rows in sinks["rows"].items():
        got = query(sinks["db"], f"SELECT CAST(id AS INTEGER) AS n, name FROM {table} ORDER BY n")
        assert got == rows, table
    assert markers(sinks["db"]) == [(SQL_SHARD, table, 80) for table in TABLES]


def replay_on_b(state: SiteState) -> None:
    state.set_bandwidth("run1", 0)  # lift the limit: the replay need not be slow
    for shard_id in (FILE_SHARD, SQL_SHARD):
        attempt = state.new_attempt(shard_id, "b")
        outcome = run_shard(shard_id, attempt, node="b", state=state, reporter=MemoryReporter(),
                            connector_factory=connector_for)
        assert outcome.status == OUTCOME_SUCCEEDED, outcome


def test_a_killed_attempt_replayed_elsewhere_leaves_the_sinks_as_if_run_once(
        state: SiteState, redis_url: str, sinks: dict[str, Any]) -> None:
    procs = [child(redis_url, s, state.new_attempt(s, "a"), "a") for s in (FILE_SHARD, SQL_SHARD)]
    try:
        wait_for(lambda: committed_files(sinks["files"]) and staging_files(sinks["files"])
                 and markers(sinks["db"]), timeout=60, what="both attempts half done")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    half = len(committed_files(sinks["files"]))
    assert 0 < half < len(TABLES) and 0 < len(markers(sinks["db"])) < len(TABLES)

    # Node a starts again: it hands its shards back and cleans the dead attempts' staging.
    moved, leftovers = reclaim_at_start(state, "a")
    assert sorted(moved) == [FILE_SHARD, SQL_SHARD]
    assert leftovers == {f"{FILE_SHARD}.1", f"{SQL_SHARD}.1"}
    assert clean_staging(state, "a", leftovers, connector_factory=connector_for) >= 1
    assert staging_files(sinks["files"]) == [] and state.started("a") == set()
    assert state.pending()[:2] in ([FILE_SHARD, SQL_SHARD], [SQL_SHARD, FILE_SHARD])

    replay_on_b(state)

    assert_as_if_run_once(sinks)


def test_a_paused_old_attempt_that_wakes_up_commits_nothing(
        state: SiteState, redis_url: str, sinks: dict[str, Any]) -> None:
    procs = [child(redis_url, s, state.new_attempt(s, "a"), "a") for s in (FILE_SHARD, SQL_SHARD)]
    try:
        wait_for(lambda: committed_files(sinks["files"]) and markers(sinks["db"]), timeout=60,
                 what="both attempts half done")
        for proc in procs:
            proc.send_signal(signal.SIGSTOP)
        # Node a looks dead: the dispatcher moves its shards; node b runs them to the end.
        for shard_id in (FILE_SHARD, SQL_SHARD):
            assert requeue(state, shard_id, "a") > 0
        replay_on_b(state)
        assert committed_files(sinks["files"]) == TABLES
        assert len(staging_files(sinks["files"])) == 1  # the paused attempt's file in flight
        before = {name: (sinks["files"] / name).stat().st_mtime_ns for name in TABLES}

        for proc in procs:
            proc.send_signal(signal.SIGCONT)
        outcomes = [json.loads(proc.communicate(timeout=60)[0].strip().splitlines()[-1]) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    assert [o["status"] for o in outcomes] == ["stale", "stale"]
    assert_as_if_run_once(sinks)
    assert {name: (sinks["files"] / name).stat().st_mtime_ns for name in TABLES} == before  # none rewritten
    assert state.started("a") == set()
