"""The engine between real stores: s3 on moto, azureblob on Azurite, sql on SQLite, file on tmp.

Large objects go in parts (S3 multipart, Azure blocks) and come back in parallel
ranged reads; checksums are verified where each store can; a second copy skips
what the sink already has, even where the sink keeps no modified time.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import sqlalchemy as sa

from dmg.connectors.base import Connector, StoreSpec
from dmg.connectors.file import FileConnector
from dmg.transfer import CopyOptions, copy_entries
from tests.workers.support import tree, write_files

MiB = 1024 * 1024


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.fixture
def s3(s3_server: Any, s3_bucket: str) -> Any:
    from dmg.connectors.s3 import S3Connector

    options = {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region, "addressing_style": "path",
               "multipart_threshold": 5 * MiB, "multipart_chunksize": 5 * MiB, "max_concurrency": 3,
               "upload_cutoff": 0}  # parts from 5 MiB (one PUT of a file: test_s3_single_put.py)
    connector = S3Connector(StoreSpec("bucket", "s3", f"s3://{s3_bucket}/root", options),
                            credential=s3_server.credential)
    yield connector
    connector.close()


@pytest.fixture
def blobs(azurite: Any, azure_container: str) -> Any:
    from dmg.connectors.azureblob import AzureBlobConnector

    connector = AzureBlobConnector(
        StoreSpec("blobs", "azureblob", f"azureblob://{azure_container}/root",
                  {"block_size": 256 * 1024, "max_concurrency": 3}),
        credential=azurite.credential)
    yield connector
    connector.close()


def files(tmp_path: Path, name: str) -> FileConnector:
    (tmp_path / name).mkdir(exist_ok=True)
    return FileConnector(StoreSpec(name, "file", str(tmp_path / name)))


def copy(source: Connector, sink: Connector, prefix: str = "in", **options: Any) -> Any:
    return copy_entries(source, sink, list(source.list(prefix)), source_prefix=prefix, sink_prefix="out",
                        staging_id=options.pop("staging_id", "t.1"), options=CopyOptions.from_json(options))


def content(connector: Connector, path: str) -> bytes:
    with connector.open_read(path) as reader:
        return reader.read()


def test_file_to_s3_and_back_then_nothing_twice(tmp_path: Path, s3: Any) -> None:
    write_files(tmp_path / "src" / "in", {"small.bin": 40_000, "big.bin": 11 * MiB + 5, "d/e": 3})
    source = files(tmp_path, "src")

    first = copy(source, s3)
    assert [f.status for f in first.files] == ["copied"] * 3
    big = (tmp_path / "src/in/big.bin").read_bytes()
    assert content(s3, "out/big.bin") == big
    # above the cutoff the file goes in parts read from the file: its checksum is the CRC-32
    # the parts' composite CRC-32 was checked against
    assert {f.path: f.checksum for f in first.files}["out/big.bin"] == f"crc32:{zlib.crc32(big):08x}"

    again = {f.path: f for f in copy(source, s3, staging_id="t.2").files}
    assert again["out/small.bin"].status == "skipped"
    assert again["out/small.bin"].error == "same size and checksum"  # hashed against the ETag
    assert again["out/big.bin"].status == "skipped"  # multipart: no MD5, uploaded after the change

    back = files(tmp_path, "back")
    result = copy(s3, back, prefix="out", part_size=1 * MiB, parallel_parts=3)
    assert [f.status for f in result.files] == ["copied"] * 3
    assert tree(tmp_path / "back" / "out") == tree(tmp_path / "src" / "in")
    small = {f.path: f for f in result.files}["out/small.bin"]
    assert "source-md5" in small.verified  # the ETag is the MD5 of a single-part upload


def test_a_large_s3_object_comes_back_in_parallel_ranged_parts(tmp_path: Path, s3: Any) -> None:
    data = os.urandom(6 * MiB + 123)
    s3.client.put_object(Bucket=s3.bucket, Key="root/in/one.bin", Body=data)
    sink = files(tmp_path, "dst")

    class CountingS3(type(s3)):  # type: ignore[misc]
        offsets: list[int] = []

        def open_range(self, path: str, *, offset: int, length: int) -> BinaryIO:
            CountingS3.offsets.append(offset)
            return super().open_range(path, offset=offset, length=length)

    counting = CountingS3.__new__(CountingS3)
    counting.__dict__.update(s3.__dict__)

    result = copy(counting, sink, part_size=1 * MiB, parallel_parts=4)

    assert result.files[0].status == "copied" and "source-md5" in result.files[0].verified
    assert (tmp_path / "dst/out/one.bin").read_bytes() == data
    assert sorted(CountingS3.offsets) == [k * MiB for k in range(7)]


def test_a_corrupting_s3_source_is_caught_before_commit(tmp_path: Path, s3: Any) -> None:
    data = os.urandom(300_000)
    s3.client.put_object(Bucket=s3.bucket, Key="root/in/x.bin", Body=data)

    class FlippingS3(type(s3)):  # type: ignore[misc]
        def open_read(self, path: str, *, offset: int = 0) -> BinaryIO:
            import io

            good = super().open_read(path, offset=offset).read()
            return io.BytesIO(bytes([good[0] ^ 1]) + good[1:])

    flipping = FlippingS3.__new__(FlippingS3)
    flipping.__dict__.update(s3.__dict__)
    sink = files(tmp_path, "dst")

    result = copy(flipping, sink)

    assert result.files[0].status == "failed" and "source checksum" in result.files[0].error
    assert tree(tmp_path / "dst") == {}


def test_s3_to_azure_blob_verifies_the_content_md5(s3: Any, blobs: Any) -> None:
    big, small = os.urandom(2 * MiB + 1), os.urandom(1000)
    s3.client.put_object(Bucket=s3.bucket, Key="root/in/big", Body=big)
    s3.client.put_object(Bucket=s3.bucket, Key="root/in/small", Body=small)

    result = {f.path: f for f in copy(s3, blobs).files}

    assert content(blobs, "out/big") == big and content(blobs, "out/small") == small
    assert result["out/big"].verified == "size,source-md5,sink-md5"
    again = copy(s3, blobs, staging_id="t.2")
    assert [f.status for f in again.files] == ["skipped", "skipped"]  # both checksums known and equal


def test_azure_blob_to_file(tmp_path: Path, blobs: Any) -> None:
    data = os.urandom(700_000)
    writer = blobs.open_write("in/a.bin", staging_id="seed")
    writer.write(data)
    writer.commit()

    result = copy(blobs, files(tmp_path, "dst"))

    assert result.files[0].status == "copied" and "source-md5" in result.files[0].verified
    assert (tmp_path / "dst/out/a.bin").read_bytes() == data


def test_sql_rows_of_unknown_size_copy_to_a_file_and_back(tmp_path: Path) -> None:
    from dmg.connectors.sql import SqlConnector

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT)"))
        conn.execute(sa.text("INSERT INTO people VALUES (1, 'ada'), (2, 'alan'), (3, 'grace')"))
        conn.execute(sa.text("CREATE TABLE people_copy (id INTEGER PRIMARY KEY, name TEXT)"))
    engine.dispose()
    db = SqlConnector(StoreSpec("db", "sql", url))
    sink = files(tmp_path, "dst")
    try:
        result = copy(db, sink, prefix="people")
        assert result.files[0].status == "copied" and result.files[0].path == "out/people"
        assert result.files[0].verified == "staged-crc32"  # no size to check: -1 until read
        assert (tmp_path / "dst/out/people").read_bytes() == b"id,name\n1,ada\n2,alan\n3,grace\n"

        (tmp_path / "dst/people_copy").write_bytes(b"id,name\n7,edsger\n")
        back = copy_entries(sink, db, list(sink.list("people_copy")), source_prefix="people_copy",
                            sink_prefix="", staging_id="t.3", options=CopyOptions())
        assert back.files[0].status == "copied" and back.files[0].path == "people_copy"
        assert back.files[0].verified == "size"  # a table holds rows, not the file's bytes
        with db.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT id, name FROM people_copy")).all() == [(7, "edsger")]
    finally:
        db.close()
