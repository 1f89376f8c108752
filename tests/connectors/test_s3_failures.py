"""The ``s3`` store against moto: server down, wrong keys, missing bucket, multipart staging."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from dmg.connectors import connector_for
from dmg.connectors.base import StoreSpec
from dmg.connectors.file import FileConnector
from dmg.connectors.s3 import S3Connector
from dmg.errors import BadInput, NotFound, PermissionDenied, Retryable
from tests.servers.s3 import MotoServer, S3Server

MiB = 1024 * 1024


def make_store(server: S3Server, bucket: str, *, credential: dict[str, str] | None = None,
               **options: Any) -> S3Connector:
    opts = {"endpoint_url": server.endpoint_url, "region": server.region, "max_attempts": 0,
            "multipart_threshold": 5 * MiB, "multipart_chunksize": 5 * MiB, **options}
    return S3Connector(StoreSpec("bucket", "s3", f"s3://{bucket}/data", opts),
                       credential=credential or server.credential)


@pytest.fixture
def store(s3_server: S3Server, s3_bucket: str) -> Iterator[S3Connector]:
    connector = make_store(s3_server, s3_bucket)
    yield connector
    connector.close()


def test_the_registry_builds_an_s3_store(s3_server: S3Server, s3_bucket: str) -> None:
    spec = StoreSpec("b", "s3", f"s3://{s3_bucket}", {"endpoint_url": s3_server.endpoint_url,
                                                      "region": s3_server.region})
    assert isinstance(connector_for(spec), S3Connector)


def test_a_stopped_server_is_retryable() -> None:
    moto = MotoServer().start()
    try:
        server = S3Server(moto.endpoint_url)
        server.client().create_bucket(Bucket="gone-soon")
        store = make_store(server, "gone-soon", connect_timeout=2)
        store.check_reachable()
    finally:
        moto.stop()

    for call in (store.check_reachable, lambda: store.stat("a.bin"), lambda: list(store.list()),
                 lambda: store.open_read("a.bin")):
        with pytest.raises(Retryable, match="unreachable"):
            call()
    writer = store.open_write("a.bin", staging_id="s:1")
    writer.write(b"data")
    with pytest.raises(Retryable):
        writer.commit()


def test_wrong_keys_are_permission_denied_without_the_secret(s3_server: S3Server, s3_bucket: str) -> None:
    wrong = {"access_key_id": "AKIAWRONGWRONGWRONG1", "secret_access_key": "not-the-secret-xyz"}
    store = make_store(s3_server, s3_bucket, credential=wrong)
    s3_server.enforce_auth(True)
    try:
        with pytest.raises(PermissionDenied) as denied:
            store.check_reachable()
        with pytest.raises(PermissionDenied):
            list(store.list())
        with pytest.raises(PermissionDenied):
            store.stat("a.bin")
    finally:
        s3_server.enforce_auth(False)
    assert "not-the-secret-xyz" not in str(denied.value)
    assert "credentials" in denied.value.hint


def test_a_missing_bucket_is_not_found(s3_server: S3Server) -> None:
    store = make_store(s3_server, "no-such-bucket")

    with pytest.raises(NotFound, match="bucket 'no-such-bucket' does not exist"):
        store.check_reachable()
    with pytest.raises(NotFound, match="bucket does not exist"):
        list(store.list())


@pytest.mark.parametrize("location", ["http://bucket/x", "s3://", "s3:///prefix"])
def test_a_malformed_location_is_bad_input(location: str) -> None:
    with pytest.raises(BadInput, match="s3://bucket"):
        S3Connector(StoreSpec("b", "s3", location))


def test_a_malformed_option_is_bad_input() -> None:
    with pytest.raises(BadInput, match="invalid S3 option"):
        S3Connector(StoreSpec("b", "s3", "s3://bucket", {"multipart_chunksize": "big"}))


def test_a_large_write_streams_parts_before_commit_and_stays_invisible(
        store: S3Connector, s3_server: S3Server, s3_bucket: str) -> None:
    client = s3_server.client()
    data = bytes(range(256)) * (12 * MiB // 256)

    writer = store.open_write("big.bin", staging_id="s:1")
    writer.write(data)

    uploads = client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert [u["Key"] for u in uploads] == ["data/big.bin"]
    with pytest.raises(NotFound):
        store.stat("big.bin")
    writer.commit()
    assert store.stat("big.bin").size == len(data)
    assert store.stat("big.bin").checksum is None  # a multipart ETag is not an MD5
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_abort_removes_the_multipart_upload(store: S3Connector, s3_server: S3Server, s3_bucket: str) -> None:
    writer = store.open_write("big.bin", staging_id="s:1")
    writer.write(b"x" * (11 * MiB))
    writer.abort()

    assert s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    with pytest.raises(NotFound):
        store.stat("big.bin")


def test_a_single_put_exposes_its_md5(store: S3Connector) -> None:
    writer = store.open_write("small.bin", staging_id="s:1")
    writer.write(b"hello")
    writer.commit()

    assert store.stat("small.bin").checksum == hashlib.md5(b"hello").hexdigest()
    assert "native_checksum" in store.capabilities


def test_server_side_copy_within_and_across_buckets(store: S3Connector, s3_server: S3Server) -> None:
    writer = store.open_write("src.bin", staging_id="s:1")
    writer.write(b"payload")
    writer.commit()
    s3_server.client().create_bucket(Bucket="copy-target")
    other = make_store(s3_server, "copy-target")

    assert store.can_copy_from(store) and other.can_copy_from(store)
    copied = store.copy_from(store, "src.bin", "dst.bin")
    across = other.copy_from(store, "src.bin", "in/other.bin")

    assert copied.size == across.size == 7
    assert copied.checksum == across.checksum == hashlib.md5(b"payload").hexdigest()
    with other.open_read("in/other.bin") as reader:
        assert reader.read() == b"payload"


def test_server_side_copy_refuses_another_type_or_other_keys(store: S3Connector, s3_server: S3Server,
                                                             s3_bucket: str, tmp_path: Any) -> None:
    files = FileConnector(StoreSpec("f", "file", str(tmp_path)))
    other_keys = make_store(s3_server, s3_bucket, credential={"access_key_id": "AKIDOTHER",
                                                              "secret_access_key": "other"})

    assert not store.can_copy_from(files) and not store.can_copy_from(other_keys)
    for source in (files, other_keys):
        with pytest.raises(BadInput, match="stream the copy"):
            store.copy_from(source, "a", "b")
