"""Uploading one object to S3 (moto): the checksum that verified it, a mismatch, a killed upload."""

from __future__ import annotations

import base64
import hashlib
import os
import textwrap
import zlib
from pathlib import Path

import pytest

from dmg.connectors.base import StoreSpec
from dmg.connectors.s3 import S3Connector
from dmg.connectors.s3upload import S3Writer, composite_crc32
from dmg.errors import BadInput, Fatal, NotFound
from tests.connectors.killed import kill_once_parts_sent
from tests.servers.s3 import S3Server

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


def make_store(server: S3Server, bucket: str, **options: object) -> S3Connector:
    opts = {"endpoint_url": server.endpoint_url, "region": server.region, "max_attempts": 0,
            "multipart_threshold": 5 * MiB, "multipart_chunksize": 5 * MiB, **options}
    return S3Connector(StoreSpec("bucket", "s3", f"s3://{bucket}/data", opts), credential=server.credential)


def write(store: S3Connector, path: str, data: bytes, *, chunk: int = 1 * MiB - 7) -> S3Writer:
    """Write ``data`` in odd-sized chunks (parts are cut across them) and commit."""
    writer = store.open_write(path, staging_id="s:1")
    assert isinstance(writer, S3Writer)
    for start in range(0, len(data), chunk):
        writer.write(data[start:start + chunk])
    writer.commit()
    return writer


def test_a_multipart_upload_is_verified_by_the_composite_crc32_of_its_parts(
        s3_server: S3Server, s3_bucket: str) -> None:
    data = os.urandom(12 * MiB + 5)  # parts of 5, 5 and 2 MiB + 5 bytes
    writer = write(make_store(s3_server, s3_bucket), "big.bin", data)

    assert writer.verified_by == "composite-crc32"
    client = s3_server.client()
    head = client.head_object(Bucket=s3_bucket, Key="data/big.bin", ChecksumMode="ENABLED")
    parts = [data[i:i + 5 * MiB] for i in range(0, len(data), 5 * MiB)]
    assert head["ChecksumCRC32"].split("-")[0] == composite_crc32([zlib.crc32(p) for p in parts])
    assert head["ETag"].strip('"').endswith("-3")
    assert client.get_object(Bucket=s3_bucket, Key="data/big.bin")["Body"].read() == data


def test_the_md5_part_checksum_verifies_the_multipart_etag(s3_server: S3Server, s3_bucket: str) -> None:
    data = os.urandom(11 * MiB)
    writer = write(make_store(s3_server, s3_bucket, part_checksum="md5"), "big.bin", data)

    assert writer.verified_by == "multipart-md5"
    got = s3_server.client().get_object(Bucket=s3_bucket, Key="data/big.bin")["Body"].read()
    assert hashlib.md5(got).digest() == hashlib.md5(data).digest()


def test_a_single_put_is_verified_by_its_content_md5(s3_server: S3Server, s3_bucket: str) -> None:
    data = os.urandom(3 * MiB)
    store = make_store(s3_server, s3_bucket)
    writer = write(store, "small.bin", data)

    assert writer.verified_by == "content-md5"
    assert store.stat("small.bin").checksum == hashlib.md5(data).hexdigest()


def test_an_unknown_part_checksum_is_bad_input(s3_server: S3Server) -> None:
    with pytest.raises(BadInput, match="part_checksum must be one of crc32, md5"):
        make_store(s3_server, "any", part_checksum="sha1")


def test_an_object_whose_composite_crc32_differs_is_deleted_and_fails(
        s3_server: S3Server, s3_bucket: str) -> None:
    """S3 answering a composite CRC-32 that is not the parts' (a part replaced in transit):
    the completed object is deleted, never left visible, and the write fails."""
    store = make_store(s3_server, s3_bucket)
    writer = store.open_write("bad.bin", staging_id="s:1")
    assert isinstance(writer, S3Writer)
    writer.write(os.urandom(11 * MiB))
    client = s3_server.client()
    original = client.complete_multipart_upload

    # The store's own client is the process's shared one: this test's reply is the server's
    # real reply with the checksum of other bytes, as a faulty server would answer.
    def complete_with_another_checksum(**kwargs: object) -> dict[str, object]:
        reply = dict(original(**kwargs))
        reply["ChecksumCRC32"] = base64.b64encode(b"\0\0\0\1").decode() + "-3"
        return reply

    writer._client = type("Client", (), {
        "complete_multipart_upload": staticmethod(complete_with_another_checksum),
        "delete_object": staticmethod(client.delete_object),
        "abort_multipart_upload": staticmethod(client.abort_multipart_upload),
        "upload_part": staticmethod(store.client.upload_part),
        "create_multipart_upload": staticmethod(store.client.create_multipart_upload),
    })()
    with pytest.raises(Fatal, match="composite CRC-32"):
        writer.commit()
    with pytest.raises(NotFound):
        store.stat("bad.bin")
    assert writer.state == "aborted"


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from dmg.connectors.base import StoreSpec
    from dmg.connectors.s3 import S3Connector
    endpoint, bucket, key_id, secret = sys.argv[1:5]
    spec = StoreSpec("b", "s3", f"s3://{bucket}/data", {
        "endpoint_url": endpoint, "region": "us-east-1", "multipart_threshold": 5 << 20,
        "multipart_chunksize": 5 << 20})
    store = S3Connector(spec, credential={"access_key_id": key_id, "secret_access_key": secret})
    writer = store.open_write("killed.bin", staging_id="s:1")
    for _ in range(16):
        writer.write(os.urandom(1 << 20))
    writer._pool.results()  # the parts so far are stored
    print("parts sent", flush=True)
    signal.pause()  # until the test kills it
""")


def test_a_killed_upload_leaves_no_visible_object_and_its_parts_are_cleaned_up(
        s3_server: S3Server, s3_bucket: str) -> None:
    """SIGKILL in the middle of a multipart upload: no object (not even a partial one) is
    visible; the next attempt's cleanup aborts the upload it left."""
    cred = s3_server.credential
    kill_once_parts_sent(KILLED_WRITER, s3_server.endpoint_url, s3_bucket,
                         cred["access_key_id"], cred["secret_access_key"])

    store = make_store(s3_server, s3_bucket)
    with pytest.raises(NotFound):
        store.stat("killed.bin")
    assert list(store.list()) == []
    client = s3_server.client()
    uploads = client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert [u["Key"] for u in uploads] == ["data/killed.bin"]

    assert store.cleanup_staging("s:2", targets=["killed.bin"]) == 1
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
