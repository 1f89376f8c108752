"""The ``sql`` store beyond the contract: URLs, missing tables, bad rows, queries, key ranges,
types, and replays, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dmg.connectors import connector_for
from dmg.connectors.base import StoreSpec
from dmg.connectors.sql import MARKER_TABLE, SqlConnector
from dmg.errors import BadInput, DmgError, NotFound, Retryable
from dmg.procs import free_port
from tests.servers.postgres import PostgresServer

_databases = iter(range(1, 10_000))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or a fresh database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"dmg_sql_{next(_databases)}")


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    yield eng
    eng.dispose()


def make_store(url: str, **options: Any) -> SqlConnector:
    return SqlConnector(StoreSpec("db", "sql", url, options))


def run(engine: sa.Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


def rows(engine: sa.Engine, query: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(query))]


def read_all(store: SqlConnector, path: str) -> bytes:
    with store.open_read(path) as reader:
        return reader.read()


def commit(store: SqlConnector, path: str, data: bytes, *, staging_id: str = "shard:1") -> None:
    writer = store.open_write(path, staging_id=staging_id)
    writer.write(data)
    writer.commit()


# -- locations ----------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["postgresql://dmg:hunter2@127.0.0.1:5432/db",
                                 "postgresql+psycopg://dmg:hunter2@db.example/db",
                                 "mysql://root:hunter2@localhost/db"])
def test_a_password_in_the_url_is_refused_without_repeating_it(url: str) -> None:
    with pytest.raises(BadInput, match="contains a password") as refused:
        connector_for(StoreSpec("db", "sql", url))
    assert "hunter2" not in str(refused.value)
    assert refused.value.__cause__ is None


def test_an_unparsable_url_is_bad_input_without_echo() -> None:
    with pytest.raises(BadInput, match="not a database URL") as refused:
        make_store("::hunter2::")
    assert "hunter2" not in str(refused.value)


def test_the_password_comes_from_the_credential(postgres_server: PostgresServer) -> None:
    store = SqlConnector(StoreSpec("db", "sql", postgres_server.url("postgres")),
                         credential={"password": "from-the-site"})

    assert store.url.password == "from-the-site"
    assert "from-the-site" not in repr(store.engine)
    store.check_reachable()  # the test cluster trusts local users; the password is ignored


def test_an_unreachable_database_is_retryable() -> None:
    store = make_store(f"postgresql://dmg@127.0.0.1:{free_port()}/db", connect_timeout=2)

    for call in (store.check_reachable, lambda: list(store.list()), lambda: store.open_read("t")):
        with pytest.raises(Retryable):
            call()


def test_a_missing_database_is_not_found(postgres_server: PostgresServer) -> None:
    store = make_store(postgres_server.url("no_such_database"))

    with pytest.raises(NotFound, match="no_such_database"):
        store.check_reachable()


def test_an_unknown_format_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="unknown format"):
        make_store(f"sqlite:///{tmp_path / 'x.db'}", format="parquet")


# -- missing tables and bad rows ------------------------------------------------------------
def test_a_missing_table_is_not_found_on_read_and_on_commit(db_url: str) -> None:
    store = make_store(db_url)

    with pytest.raises(NotFound, match="'missing' does not exist"):
        store.open_read("missing")
    with pytest.raises(NotFound, match="does not exist"):
        store.stat("missing")
    writer = store.open_write("missing", staging_id="shard:1")
    writer.write(b"id,name\n1,a\n")
    with pytest.raises(NotFound, match="create_table") as missing:
        writer.commit()
    assert "create_table" in missing.value.hint or "create_table" in str(missing.value)


def test_create_table_makes_a_missing_table_from_the_data(db_url: str, engine: sa.Engine) -> None:
    store = make_store(db_url, create_table=True)
    commit(store, "people", b"id,name\n1,ann\n2,bob\n")
    jsonl = make_store(db_url, create_table=True, format="jsonl")
    commit(jsonl, "events", b'{"n": 1, "ok": true, "w": 1.5, "tag": "x"}\n{"n": 2, "ok": false, '
                            b'"w": 2.5, "tag": null}\n')

    assert rows(engine, "SELECT id, name FROM people ORDER BY id") == [("1", "ann"), ("2", "bob")]
    assert rows(engine, "SELECT n, ok, w, tag FROM events ORDER BY n") == [(1, True, 1.5, "x"),
                                                                          (2, False, 2.5, None)]


@pytest.mark.parametrize(("data", "message"), [
    (b"id,name\n1,a\n2\n", "CSV line 3 has 1 fields"),
    (b"id,name\nten,a\n", "row 1, column 'id'"),
    (b"id,colour\n1,red\n", "column 'colour' does not exist"),
    (b"id,name\n1,\xff\n", "not UTF-8"),
])
def test_bad_rows_are_bad_input_and_insert_nothing(db_url: str, engine: sa.Engine, data: bytes,
                                                   message: str) -> None:
    run(engine, "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
    store = make_store(db_url)

    writer = store.open_write("t", staging_id="shard:1")
    writer.write(data)
    with pytest.raises(BadInput, match=message):
        writer.commit()

    assert rows(engine, "SELECT count(*) FROM t") == [(0,)]
    commit(store, "t", b"id,name\n1,retried\n")  # the failed attempt left no marker behind
    assert rows(engine, "SELECT id, name FROM t") == [(1, "retried")]


def test_a_duplicate_key_fails_the_whole_commit(db_url: str, engine: sa.Engine) -> None:
    run(engine, "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)", "INSERT INTO t VALUES (2, 'old')")
    store = make_store(db_url, batch_size=1)

    writer = store.open_write("t", staging_id="shard:1")
    writer.write(b"id,name\n1,new\n2,clash\n")
    with pytest.raises(DmgError):
        writer.commit()

    assert rows(engine, "SELECT id, name FROM t ORDER BY id") == [(2, "old")]


# -- replays --------------------------------------------------------------------------------
def test_the_marker_row_records_each_commit_once(db_url: str, engine: sa.Engine) -> None:
    run(engine, "CREATE TABLE a (id INTEGER PRIMARY KEY)", "CREATE TABLE b (id INTEGER PRIMARY KEY)")
    store = make_store(db_url)

    commit(store, "a", b"id\n1\n2\n", staging_id="shard-7:1")
    commit(store, "b", b"id\n1\n", staging_id="shard-7:1")  # one shard, two tables
    commit(store, "a", b"id\n1\n2\n", staging_id="shard-7:1")  # replay

    assert rows(engine, "SELECT count(*) FROM a") == [(2,)]
    assert rows(engine, "SELECT count(*) FROM b") == [(1,)]
    assert sorted(rows(engine, f"SELECT staging_id, target, rows FROM {MARKER_TABLE}")) == [
        ("shard-7:1", "a", 2), ("shard-7:1", "b", 1)]
    assert [e.path for e in store.list()] == ["a", "b"]  # the marker table is not data


def test_concurrent_replays_insert_once(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database(f"dmg_sql_{next(_databases)}")
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    run(engine, "CREATE TABLE t (id INTEGER, name TEXT)")
    data = b"id,name\n" + b"".join(f"{i},n{i}\n".encode() for i in range(500))
    errors: list[BaseException] = []

    def replay() -> None:
        try:
            commit(make_store(url, batch_size=50), "t", data, staging_id="shard-9:1")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=replay) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert rows(engine, "SELECT count(*) FROM t") == [(500,)]
    engine.dispose()


# -- queries --------------------------------------------------------------------------------
def test_named_queries_are_listed_read_only_paths(db_url: str, engine: sa.Engine) -> None:
    run(engine, "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)",
        "INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    store = make_store(db_url, queries={"big": "SELECT id * 10 AS big FROM t ORDER BY id"})

    assert [e.path for e in store.list()] == ["query:big", "t"]
    assert read_all(store, "query:big") == b"big\n10\n20\n"
    with pytest.raises(NotFound, match="no query named 'other'"):
        store.open_read("query:other")
    with pytest.raises(BadInput, match="read-only"):
        store.open_write("query:big", staging_id="s:1")


# -- key ranges -----------------------------------------------------------------------------
def test_key_ranges_cover_every_row_exactly_once(db_url: str, engine: sa.Engine) -> None:
    run(engine, "CREATE TABLE orders (id INTEGER, note TEXT)")
    values = ", ".join(f"({i}, 'n{i}')" for i in range(1, 24))
    run(engine, f"INSERT INTO orders VALUES {values}, (NULL, 'no key'), (5, 'dup')")
    store = make_store(db_url, shard_key="id", rows_per_shard=5, format="jsonl")

    shards = [e.path for e in store.list()]
    assert shards[0] == "orders?id<5"
    assert len(shards) == 5
    seen = [json.loads(line) for path in shards for line in read_all(store, path).splitlines()]

    assert sorted((r["id"] or 0, r["note"]) for r in seen) == sorted(
        [(i, f"n{i}") for i in range(1, 24)] + [(0, "no key"), (5, "dup")])
    assert [e.path for e in store.list(shards[1])] == [shards[1]]


def test_deleting_a_key_range_keeps_the_other_rows(db_url: str, engine: sa.Engine) -> None:
    run(engine, "CREATE TABLE t (id INTEGER PRIMARY KEY)", "INSERT INTO t VALUES (1), (2), (3), (4)")
    store = make_store(db_url)

    store.delete("t?id>=2&id<4")

    assert rows(engine, "SELECT id FROM t ORDER BY id") == [(1,), (4,)]


def test_a_malformed_key_range_is_bad_input(db_url: str, engine: sa.Engine) -> None:
    run(engine, "CREATE TABLE t (id INTEGER PRIMARY KEY)")
    store = make_store(db_url)

    with pytest.raises(BadInput, match="not a key range"):
        store.stat("t?id>1")
    with pytest.raises(BadInput, match="not a valid INTEGER"):
        store.open_read("t?id>=abc")
    with pytest.raises(BadInput, match="no column 'nope'"):
        store.open_read("t?nope>=1")


# -- types ----------------------------------------------------------------------------------
def test_typed_values_round_trip_through_json_lines(db_url: str, engine: sa.Engine) -> None:
    run(engine, "CREATE TABLE typed (id INTEGER PRIMARY KEY, amount NUMERIC(10, 2), ok BOOLEAN, "
                "day DATE, at TIMESTAMP, blob_ " + ("BYTEA" if "postgres" in db_url else "BLOB") + ", "
                "note TEXT)")
    source = make_store(db_url, format="jsonl")
    data = (b'{"id": 1, "amount": "12.50", "ok": true, "day": "2024-02-29", '
            b'"at": "2024-02-29T13:14:15", "blob_": "AAEC/w==", "note": null}\n'
            b'{"id": 2, "amount": null, "ok": false, "day": null, "at": null, "blob_": null, '
            b'"note": "caf\xc3\xa9"}\n')

    commit(source, "typed", data)

    assert read_all(source, "typed") == data
    as_csv = make_store(db_url)
    first_row = read_all(as_csv, "typed").splitlines()[1]
    assert first_row == b"1,12.50,true,2024-02-29,2024-02-29T13:14:15,AAEC/w==,"
