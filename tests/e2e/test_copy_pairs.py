"""Every pair of stores that makes sense, through the whole two-node gateway.

Given real servers (moto, Azurite, PostgreSQL, SQLite files) and stores whose
secrets live only in the site's credentials file, when a one-activity pipeline
runs, then the sink holds exactly what the source held.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from tests.e2e.conftest import Gateway, assert_succeeded, unique
from tests.servers.azurite import ACCOUNT, ACCOUNT_KEY, AzuriteServer
from tests.servers.postgres import PostgresServer
from tests.servers.s3 import S3Server

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
FILES = {"a.txt": 1000, "b.bin": 70_000, "dir/c.bin": 300_000, "dir/deep/d.bin": 6 * MiB + 123,
         "dir/deep/e.txt": 10, "f.bin": 2 * MiB}
ROWS = [(1, "ann", 3), (2, "bob, jr.", 0), (3, 'zoë "z"', 12), (4, "", 7)]
CSV = 'id,name,qty\n1,ann,3\n2,"bob, jr.",0\n3,"zoë ""z""",12\n4,,7\n'


def write_tree(root: Path, files: dict[str, int]) -> dict[str, bytes]:
    content = {}
    for rel, size in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        content[rel] = os.urandom(size)
        path.write_bytes(content[rel])
    return content


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def s3_options(server: S3Server) -> dict[str, Any]:
    # 5 MiB parts: the 6 MiB file goes through a multipart upload.
    return {"endpoint_url": server.endpoint_url, "region": server.region,
            "multipart_threshold": 5 * MiB, "multipart_chunksize": 5 * MiB}


def s3_objects(server: S3Server, bucket: str, prefix: str) -> dict[str, bytes]:
    client = server.client()
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            found[item["Key"][len(prefix):]] = body
    return found


@pytest.fixture
def blobs(azurite: AzuriteServer, azure_container: str) -> Iterator[Any]:
    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        yield service.get_container_client(azure_container)


def sqlite_db(path: Path, rows: list[tuple[Any, ...]] | None = None) -> str:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER)")
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?)", rows or [])
    conn.close()
    return f"sqlite:///{path}"


def sqlite_rows(location: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(location[len("sqlite:///"):])
    try:
        return conn.execute("SELECT id, name, qty FROM orders ORDER BY id").fetchall()
    finally:
        conn.close()


def postgres_db(server: PostgresServer, rows: list[tuple[Any, ...]] | None = None) -> str:
    import psycopg

    url = server.create_database(unique("e2e").replace("-", "_"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO orders VALUES (%s, %s, %s)", rows or [])
    return url


def postgres_rows(url: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute("SELECT id, name, qty FROM orders ORDER BY id").fetchall()]


def sql_store(gateway: Gateway, kind: str, server: PostgresServer, tmp_path: Path,
              rows: list[tuple[Any, ...]] | None = None) -> tuple[str, str]:
    """A sql store (``sqlite`` or ``postgres``) holding table ``orders``; -> (name, location)."""
    if kind == "sqlite":
        location = sqlite_db(tmp_path / f"{unique('db')}.db", rows)
        return gateway.store("sql", location, {"shared": True}), location
    location = postgres_db(server, rows)
    # The throw-away cluster trusts local connections; the password is still read from the site.
    return gateway.store("sql", location, credential={"password": "unused-by-trust-auth"}), location


def rows_of(kind: str, location: str) -> list[tuple[Any, ...]]:
    return sqlite_rows(location) if kind == "sqlite" else postgres_rows(location)


# -- objects and files -----------------------------------------------------------------------
def test_file_to_s3(gateway: Gateway, s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    content = write_tree(tmp_path / "source", FILES)
    source = gateway.store("file", str(tmp_path / "source"), {"shared": True})
    sink = gateway.store("s3", f"s3://{s3_bucket}/landing", s3_options(s3_server),
                         credential=s3_server.credential)

    run = gateway.copy((source, ""), (sink, "in"))

    parts = assert_succeeded(run)
    assert s3_objects(s3_server, s3_bucket, "landing/in/") == content
    assert {s["node"] for s in parts} == {"node1", "node2"}  # three shards over two nodes
    assert sum(s["files"] for s in parts) == len(FILES)


def test_s3_to_azureblob(gateway: Gateway, s3_server: S3Server, s3_bucket: str, azurite: AzuriteServer,
                         azure_container: str, blobs: Any) -> None:
    content = {rel: os.urandom(size) for rel, size in FILES.items()}
    client = s3_server.client()
    for rel, data in content.items():
        client.put_object(Bucket=s3_bucket, Key=f"exports/{rel}", Body=data)
    client.put_object(Bucket=s3_bucket, Key="elsewhere/x.bin", Body=b"not copied")
    source = gateway.store("s3", f"s3://{s3_bucket}", s3_options(s3_server), credential=s3_server.credential)
    sink = gateway.store("azureblob", f"azureblob://{azure_container}/backup",
                         {"account_url": azurite.account_url, "block_size": 1 * MiB},
                         credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY})

    run = gateway.copy((source, "exports"), (sink, ""))

    assert_succeeded(run)
    copied = {b.name[len("backup/"):]: blobs.download_blob(b.name).readall() for b in blobs.list_blobs()}
    assert copied == content


def test_azureblob_to_file(gateway: Gateway, azurite: AzuriteServer, azure_container: str, blobs: Any,
                           tmp_path: Path) -> None:
    content = {rel: os.urandom(size) for rel, size in FILES.items()}
    for rel, data in content.items():
        blobs.upload_blob(f"data/{rel}", data)
    source = gateway.store("azureblob", f"azureblob://{azure_container}/data",
                           {"account_url": azurite.account_url},
                           credential={"connection_string": azurite.connection_string})
    (tmp_path / "sink").mkdir()
    sink = gateway.store("file", str(tmp_path / "sink"), {"shared": True})

    run = gateway.copy((source, ""), (sink, "restored"))

    assert_succeeded(run)
    assert read_tree(tmp_path / "sink") == {f"restored/{rel}": data for rel, data in content.items()}


# -- tables ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_sql_to_file(gateway: Gateway, postgres_server: PostgresServer, tmp_path: Path, kind: str) -> None:
    source, _location = sql_store(gateway, kind, postgres_server, tmp_path, ROWS)
    (tmp_path / "sink").mkdir()
    sink = gateway.store("file", str(tmp_path / "sink"), {"shared": True})

    run = gateway.copy((source, "orders"), (sink, "export"))

    assert_succeeded(run)
    assert read_tree(tmp_path / "sink") == {"export/orders": CSV.encode()}


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_file_to_sql(gateway: Gateway, postgres_server: PostgresServer, tmp_path: Path, kind: str) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "orders").write_text(CSV, encoding="utf-8")
    source = gateway.store("file", str(tmp_path / "in"), {"shared": True})
    sink, location = sql_store(gateway, kind, postgres_server, tmp_path)

    run = gateway.copy((source, "orders"), (sink, ""))

    assert_succeeded(run)
    assert rows_of(kind, location) == ROWS


@pytest.mark.parametrize("source_kind,sink_kind", [("sqlite", "postgres"), ("postgres", "sqlite"),
                                                   ("postgres", "postgres")])
def test_sql_to_sql(gateway: Gateway, postgres_server: PostgresServer, tmp_path: Path, source_kind: str,
                    sink_kind: str) -> None:
    source, _ = sql_store(gateway, source_kind, postgres_server, tmp_path, ROWS)
    sink, location = sql_store(gateway, sink_kind, postgres_server, tmp_path)

    run = gateway.copy((source, "orders"), (sink, ""))

    assert_succeeded(run)
    assert rows_of(sink_kind, location) == ROWS
