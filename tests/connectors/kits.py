"""One :class:`StoreKit` per store type: a connector on a fresh, empty store plus
what the contract suite needs to know about it (fsspec ``tests/abstract`` style).

A kit's ``writable(name)`` gives a path the suite may write (a file path, or a
table created out of band for ``sql``); ``payload(n)`` gives bytes that store
accepts and reads back unchanged; ``empty`` is what reading a path with nothing
committed returns (``None``: the object is absent, ``NotFound``).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dmg.connectors.base import Connector, StoreSpec
from dmg.errors import NotFound

_names = itertools.count(1)


@dataclass
class StoreKit:
    kind: str
    connector: Connector
    writable: Callable[[str], str]
    payload: Callable[[int], bytes]
    empty: bytes | None = None
    exact_size: bool = True
    hierarchical: bool = True
    large_size: int = 3 * 1024 * 1024  # big enough to need several parts/blocks in this kit
    extras: dict[str, Any] = field(default_factory=dict)
    #: How many hidden staged pieces (staging files, incomplete uploads, uncommitted
    #: blocks) the store holds for a path; None for a store that stages nothing outside
    #: a transaction.
    staged: Callable[[str], int] | None = None

    def content(self, path: str) -> bytes | None:
        """The bytes a reader sees at ``path`` now; ``None`` when the object is absent."""
        try:
            with self.connector.open_read(path) as reader:
                return reader.read()
        except NotFound:
            return None

    def put(self, path: str, data: bytes, *, staging_id: str = "seed:1") -> None:
        writer = self.connector.open_write(path, staging_id=staging_id)
        writer.write(data)
        writer.commit()


def blob_payload(n: int) -> bytes:
    """Deterministic bytes, different per ``n``, a few KiB long."""
    seed = hashlib.sha256(str(n).encode()).digest()
    return (seed * (64 + 17 * n))[: 2048 + 331 * n]


def _blob_paths(name: str) -> str:
    return f"dir/{name}.bin"


def file_kit(request: pytest.FixtureRequest, tmp_path: Path) -> StoreKit:
    from dmg.connectors.file import FileConnector

    root = tmp_path / "file-store"
    root.mkdir()
    connector = FileConnector(StoreSpec("files", "file", str(root)))

    def staged(path: str) -> int:
        folder = (root / path).parent
        return len(list(folder.glob(".dmg-staging.*"))) if folder.is_dir() else 0

    return StoreKit("file", connector, _blob_paths, blob_payload, extras={"root": root}, staged=staged)


def s3_kit(request: pytest.FixtureRequest, tmp_path: Path) -> StoreKit:
    from dmg.connectors.s3 import S3Connector

    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    options = {"endpoint_url": server.endpoint_url, "region": server.region,
               "multipart_threshold": 5 * 1024 * 1024, "multipart_chunksize": 5 * 1024 * 1024,
               "max_concurrency": 3, "addressing_style": "path"}
    connector = S3Connector(StoreSpec("bucket", "s3", f"s3://{bucket}/root", options),
                            credential=server.credential)
    client = server.client()

    def staged(path: str) -> int:
        return len(client.list_multipart_uploads(Bucket=bucket, Prefix=f"root/{path}").get("Uploads", []))

    return StoreKit("s3", connector, _blob_paths, blob_payload, large_size=11 * 1024 * 1024 + 123,
                    extras={"server": server, "bucket": bucket, "options": options}, staged=staged)


def azureblob_kit(request: pytest.FixtureRequest, tmp_path: Path) -> StoreKit:
    from dmg.connectors.azureblob import AzureBlobConnector

    server = request.getfixturevalue("azurite")
    container = request.getfixturevalue("azure_container")
    options = {"block_size": 64 * 1024, "max_concurrency": 3}
    connector = AzureBlobConnector(StoreSpec("blobs", "azureblob", f"azureblob://{container}/root", options),
                                   credential=server.credential)
    def staged(path: str) -> int:
        blob = connector.container.get_blob_client(f"root/{path}")
        try:
            _committed, uncommitted = blob.get_block_list("uncommitted")
        except Exception:  # no blob and no block
            return 0
        return len(uncommitted)

    return StoreKit("azureblob", connector, _blob_paths, blob_payload, large_size=1024 * 1024 + 123,
                    extras={"server": server, "container": container}, staged=staged)


TABLE_HEADER = b"id,name\n"


def csv_payload(n: int) -> bytes:
    rows = "".join(f"{i},row {i} of {n}\n" for i in range(1, 3 + n))
    return TABLE_HEADER + rows.encode()


def _sql_kit(kind: str, url: str) -> StoreKit:
    from dmg.connectors.sql import SqlConnector

    engine = sa.create_engine(url)

    def writable(name: str) -> str:
        table = f"t_{name}".replace("-", "_")
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY, name TEXT)"))
        return table

    connector = SqlConnector(StoreSpec("db", "sql", url, {"batch_size": 2}))
    kit = StoreKit(kind, connector, writable, csv_payload, empty=TABLE_HEADER, exact_size=False,
                   hierarchical=False, extras={"url": url, "engine": engine})
    return kit


def sqlite_kit(request: pytest.FixtureRequest, tmp_path: Path) -> StoreKit:
    return _sql_kit("sql-sqlite", f"sqlite:///{tmp_path / 'store.db'}")


def postgres_kit(request: pytest.FixtureRequest, tmp_path: Path) -> StoreKit:
    server = request.getfixturevalue("postgres_server")
    return _sql_kit("sql-postgres", server.create_database(f"dmg_connectors_{next(_names)}"))


KITS: dict[str, Callable[[pytest.FixtureRequest, Path], StoreKit]] = {
    "file": file_kit,
    "s3": s3_kit,
    "azureblob": azureblob_kit,
    "sql-sqlite": sqlite_kit,
    "sql-postgres": postgres_kit,
}
