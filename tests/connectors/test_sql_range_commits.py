"""Key ranges of one table into a SQL sink: each commits once, also at the same time.

A ``sql`` source with ``shard_key``/``rows_per_shard`` lists one path per key range;
a shard holds several of them when they are small, and they all land in the same
sink table. The commit marker must tell the ranges apart (a replay of one range is
a no-op; the next range is not), on SQLite and on a real PostgreSQL. Two shards whose
first commits create the same missing table at once (``create_table``) both land.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dmg.connectors.base import StoreSpec
from dmg.connectors.sql import MARKER_TABLE, SqlConnector
from dmg.errors import Retryable
from dmg.transfer import copy_entries
from dmg.transfer.options import CopyOptions

_databases = iter(range(1, 10_000))


@pytest.fixture(params=["sqlite", "postgres"])
def db_urls(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """Two empty databases (source, sink): SQLite files, or two on the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'src.sqlite'}", f"sqlite:///{tmp_path / 'dst.sqlite'}"
    server = request.getfixturevalue("postgres_server")
    n = next(_databases)
    return server.create_database(f"dmg_range_src_{n}"), server.create_database(f"dmg_range_dst_{n}")


def engine_of(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))


@pytest.fixture
def engines(db_urls: tuple[str, str]) -> Iterator[tuple[sa.Engine, sa.Engine]]:
    source, sink = engine_of(db_urls[0]), engine_of(db_urls[1])
    yield source, sink
    source.dispose()
    sink.dispose()


def store(url: str, **options: Any) -> SqlConnector:
    return SqlConnector(StoreSpec("db", "sql", url, options))


def run(engine: sa.Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


def rows(engine: sa.Engine, query: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(query))]


def commit(sink: SqlConnector, path: str, data: bytes, *, staging_id: str) -> None:
    writer = sink.open_write(path, staging_id=staging_id)
    writer.write(data)
    writer.commit()


def test_two_ranges_of_one_table_in_one_shard_both_commit(db_urls: tuple[str, str],
                                                          engines: tuple[sa.Engine, sa.Engine]) -> None:
    _source, sink_engine = engines
    run(sink_engine, "CREATE TABLE t (id INTEGER, name TEXT)")
    sink = store(db_urls[1])

    commit(sink, "t?id<3", b"id,name\n1,a\n2,b\n", staging_id="run-00001.1")
    commit(sink, "t?id>=3", b"id,name\n3,c\n4,d\n", staging_id="run-00001.1")
    # a new attempt of the same shard replays both ranges: nothing more is inserted
    commit(sink, "t?id<3", b"id,name\n1,a\n2,b\n", staging_id="run-00001.2")
    commit(sink, "t?id>=3", b"id,name\n3,c\n4,d\n", staging_id="run-00001.2")

    assert rows(sink_engine, "SELECT id, name FROM t ORDER BY id") == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]
    assert len(rows(sink_engine, f"SELECT staging_id, target FROM {MARKER_TABLE}")) == 2
    sink.close()


def test_a_whole_table_marker_is_unchanged(db_urls: tuple[str, str],
                                           engines: tuple[sa.Engine, sa.Engine]) -> None:
    _source, sink_engine = engines
    run(sink_engine, "CREATE TABLE t (id INTEGER)")
    sink = store(db_urls[1])

    commit(sink, "t", b"id\n1\n", staging_id="run-00002.1")

    assert rows(sink_engine, f"SELECT staging_id, target FROM {MARKER_TABLE}") == [("run-00002", "t")]
    sink.close()


def test_a_range_path_longer_than_the_marker_column_still_commits_once(
        db_urls: tuple[str, str], engines: tuple[sa.Engine, sa.Engine]) -> None:
    _source, sink_engine = engines
    run(sink_engine, "CREATE TABLE t (k TEXT, n INTEGER)")
    sink = store(db_urls[1])
    low, high = "a" * 200, "b" * 200

    commit(sink, f"t?k<{low}", b"k,n\na,1\n", staging_id="run-00003.1")
    commit(sink, f"t?k>={low}&k<{high}", b"k,n\nab,2\n", staging_id="run-00003.1")
    commit(sink, f"t?k>={low}&k<{high}", b"k,n\nab,2\n", staging_id="run-00003.2")  # replay

    assert rows(sink_engine, "SELECT k, n FROM t ORDER BY n") == [("a", 1), ("ab", 2)]
    targets = [t for (t,) in rows(sink_engine, f"SELECT target FROM {MARKER_TABLE}")]
    assert len(targets) == 2 and all(len(t) <= 255 for t in targets)
    sink.close()


def test_a_sql_to_sql_shard_of_several_ranges_copies_every_row_once(
        db_urls: tuple[str, str], engines: tuple[sa.Engine, sa.Engine]) -> None:
    source_engine, sink_engine = engines
    run(source_engine, "CREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT)")
    values = ", ".join(f"({i}, 'note {i}')" for i in range(1, 41))
    run(source_engine, f"INSERT INTO orders VALUES {values}")
    run(sink_engine, "CREATE TABLE orders (id INTEGER, note TEXT)")
    source = store(db_urls[0], shard_key="id", rows_per_shard=10)
    sink = store(db_urls[1])
    entries = list(source.list("orders"))
    assert len(entries) == 4  # four ranges, one shard

    for attempt in (1, 2):  # the shard, then a replay of it by a new attempt
        result = copy_entries(source, sink, entries, source_prefix="orders", sink_prefix="",
                              staging_id=f"run-00004.{attempt}", options=CopyOptions(overwrite="always"))
        assert [f.status for f in result.files] == ["copied"] * 4

    assert rows(sink_engine, "SELECT id, note FROM orders ORDER BY id") == [
        (i, f"note {i}") for i in range(1, 41)]
    source.close()
    sink.close()


def _range_data(k: int) -> bytes:
    return b"id,name\n" + b"".join(f"{k * 100 + i},n{i}\n".encode() for i in range(20))


def _first_commit(url: str, path: str, data: bytes, *, staging_id: str, barrier: threading.Barrier,
                  outcomes: dict[str, BaseException | None]) -> None:
    sink = store(url, create_table=True)
    try:
        writer = sink.open_write(path, staging_id=staging_id)
        writer.write(data)
        barrier.wait(timeout=30)
        writer.commit()
        outcomes[path] = None
    except BaseException as exc:
        outcomes[path] = exc
    finally:
        sink.close()


def test_two_first_commits_creating_one_table_at_once_are_retryable_then_both_land(
        db_urls: tuple[str, str], engines: tuple[sa.Engine, sa.Engine]) -> None:
    """Two shards of one source table reach a sink table that does not exist yet at the same
    moment (``create_table``): the loser of the CREATE race is told to retry, not failed."""
    _source, sink_engine = engines
    url = db_urls[1]
    for round_ in range(3):  # the race is tight: a few rounds make it show on PostgreSQL
        table = f"t{round_}"
        barrier = threading.Barrier(2)
        outcomes: dict[str, BaseException | None] = {}
        paths = {k: f"{table}?id>={k * 100}&id<{k * 100 + 100}" for k in (0, 1)}
        threads = [threading.Thread(target=_first_commit, args=(url, paths[k], _range_data(k)), kwargs={
            "staging_id": f"r{round_}-{k}.1", "barrier": barrier, "outcomes": outcomes}) for k in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

        assert len(outcomes) == 2
        assert all(e is None or isinstance(e, Retryable) for e in outcomes.values()), outcomes
        for k, path in paths.items():
            if outcomes[path] is not None:  # what the copy engine does with a Retryable: the file again
                commit(store(url, create_table=True), path, _range_data(k), staging_id=f"r{round_}-{k}.1")
        assert rows(sink_engine, f"SELECT count(*), count(DISTINCT id) FROM {table}") == [(40, 40)]
