"""S3 to S3 on one endpoint with the same keys: the engine copies inside S3 (moto).

No byte passes through the node (the source is never opened), the copy is fenced
like a commit, checked by size and checksum, and anything it cannot copy that way
(other keys, a file sink) is streamed as before.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

import pytest

from dmg.connectors.base import StoreSpec
from dmg.connectors.s3 import S3Connector
from dmg.errors import StaleAttempt
from dmg.transfer import CopyOptions, copy_entries
from tests.servers.s3 import S3Server

MiB = 1024 * 1024


class CountingS3(S3Connector):
    """An S3 store that counts the streams opened on it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opened = 0

    def open_read(self, path: str, *, offset: int = 0) -> BinaryIO:
        self.opened += 1
        return super().open_read(path, offset=offset)

    def open_range(self, path: str, *, offset: int, length: int) -> BinaryIO:
        self.opened += 1
        return super().open_range(path, offset=offset, length=length)


def store(server: S3Server, bucket: str, prefix: str, credential: dict[str, str] | None = None) -> CountingS3:
    options = {"endpoint_url": server.endpoint_url, "region": server.region, "addressing_style": "path"}
    return CountingS3(StoreSpec(prefix, "s3", f"s3://{bucket}/{prefix}", options),
                      credential=credential or server.credential)


@pytest.fixture
def source(s3_server: S3Server, s3_bucket: str) -> Iterator[CountingS3]:
    src = store(s3_server, s3_bucket, "src")
    for name, size in {"a.bin": 1000, "b/c.bin": 6 * MiB + 7}.items():
        src.client.put_object(Bucket=src.bucket, Key=f"src/{name}", Body=os.urandom(size))
    yield src


def copy(source: S3Connector, sink: S3Connector, **kwargs: Any) -> Any:
    return copy_entries(source, sink, list(source.list("")), source_prefix="", sink_prefix="out",
                        staging_id="s-1.1", options=CopyOptions.from_json({"verify": "re-read"}), **kwargs)


def test_s3_to_s3_is_copied_inside_s3_and_checked(source: CountingS3, s3_server: S3Server,
                                                  s3_bucket: str) -> None:
    sink = store(s3_server, s3_bucket, "dst")

    result = copy(source, sink)

    assert [f.status for f in result.files] == ["copied", "copied"]
    assert all("server-side" in f.verified and "re-read" in f.verified for f in result.files)
    assert "sink-md5" in result.files[0].verified  # a single-part object's ETag is its MD5
    assert source.opened == 0  # nothing streamed through this process
    for entry in source.list(""):
        with source.open_read(entry.path) as a, sink.open_read(f"out/{entry.path}") as b:
            assert hashlib.md5(a.read()).digest() == hashlib.md5(b.read()).digest()


def test_a_fenced_attempt_copies_nothing(source: CountingS3, s3_server: S3Server, s3_bucket: str) -> None:
    sink = store(s3_server, s3_bucket, "fenced")

    with pytest.raises(StaleAttempt):
        copy(source, sink, may_commit=lambda: False)

    assert list(sink.client.list_objects_v2(Bucket=sink.bucket, Prefix="fenced/").get("Contents", [])) == []


def test_other_keys_are_streamed(source: CountingS3, s3_server: S3Server, s3_bucket: str) -> None:
    # moto takes any key: a store with other keys works, but may not read the source bucket
    # on real S3, so the engine streams rather than guess
    sink = store(s3_server, s3_bucket, "streamed", credential={"access_key_id": "AKIDOTHER",
                                                               "secret_access_key": "other"})

    result = copy(source, sink)

    assert [f.status for f in result.files] == ["copied", "copied"]
    assert not any("server-side" in f.verified for f in result.files)
    assert source.opened >= 2
