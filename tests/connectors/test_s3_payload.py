"""What an S3 upload sends and how it survives a lost answer, through a relay in front of
a real moto server (:mod:`tests.servers.relay`): the payload is not signed but carries the
checksum S3 checks; a completion whose answer was lost still commits the file, once the
object's checksum shows it is the parts sent; the part-size rules."""

from __future__ import annotations

import hashlib
import os
import textwrap
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dmg.connectors.base import StoreSpec
from dmg.connectors.s3 import S3Connector
from dmg.connectors.s3upload import MAX_PARTS, S3Writer, crc32_b64, part_size_for
from dmg.errors import Fatal, NotFound, Retryable
from tests.connectors.killed import kill_once_parts_sent
from tests.servers.relay import Faults, Relay, Seen, flip_a_byte_of_part
from tests.servers.s3 import S3Server

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def relay(s3_server: S3Server) -> Iterator[Relay]:
    relay = Relay(s3_server.endpoint_url)
    yield relay
    relay.close()


def make_store(endpoint: str, server: S3Server, bucket: str, **options: object) -> S3Connector:
    opts = {"endpoint_url": endpoint, "region": server.region, "max_attempts": 3,
            "multipart_threshold": 5 * MiB, "multipart_chunksize": 5 * MiB, **options}
    return S3Connector(StoreSpec("bucket", "s3", f"s3://{bucket}/data", opts), credential=server.credential)


def upload_file(store: S3Connector, source: Path) -> S3Writer:
    size = source.stat().st_size
    writer = store.open_write(source.name, staging_id="s:1")
    assert isinstance(writer, S3Writer) and writer.takes_file(size)
    writer.stage_file(str(source), size=size, on_step=lambda n: None)
    writer.commit()
    return writer


def puts(relay: Relay) -> list[Seen]:
    return [s for s in relay.seen if s.method == "PUT"]


def test_an_unsigned_put_carries_the_crc32_in_a_signed_header(s3_server: S3Server, s3_bucket: str,
                                                              relay: Relay, tmp_path: Path) -> None:
    data = os.urandom(6 * MiB + 1)
    (tmp_path / "one.bin").write_bytes(data)

    writer = upload_file(make_store(relay.url, s3_server, s3_bucket), tmp_path / "one.bin")

    [put] = puts(relay)
    headers = {k.lower(): v for k, v in put.headers.items()}
    assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert headers["x-amz-checksum-crc32"] == crc32_b64(zlib.crc32(data))
    assert "x-amz-checksum-crc32" in headers["authorization"].split("SignedHeaders=")[1].split(",")[0]
    assert put.body == data and writer.verified_by == "put-crc32"


def test_sign_payload_puts_the_sha256_of_every_body_in_the_signature(
        s3_server: S3Server, s3_bucket: str, relay: Relay, tmp_path: Path) -> None:
    data = os.urandom(11 * MiB)
    (tmp_path / "two.bin").write_bytes(data)

    upload_file(make_store(relay.url, s3_server, s3_bucket, sign_payload=True, upload_cutoff=0),
                tmp_path / "two.bin")

    parts = puts(relay)
    assert len(parts) == 3
    for part in parts:
        sent = {k.lower(): v for k, v in part.headers.items()}["x-amz-content-sha256"]
        assert sent == hashlib.sha256(part.body).hexdigest()


def test_a_part_damaged_in_transit_fails_the_file_and_leaves_nothing_visible(
        s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    """moto 5.2.5 checks no x-amz-checksum-crc32 on receipt (S3 refuses the part with
    BadDigest); it does compute the parts' CRC-32 from the bytes it stored, so the composite
    checked at commit catches the damage there: the object is deleted, the file fails."""
    relay = Relay(s3_server.endpoint_url, Faults(change_body=flip_a_byte_of_part(2)))
    try:
        (tmp_path / "bad.bin").write_bytes(os.urandom(11 * MiB))
        store = make_store(relay.url, s3_server, s3_bucket, upload_cutoff=0)
        with pytest.raises(Fatal, match="composite CRC-32"):
            upload_file(store, tmp_path / "bad.bin")
        with pytest.raises(NotFound):
            store.stat("bad.bin")
    finally:
        relay.close()


def is_completion(seen: Seen) -> bool:
    return seen.method == "POST" and "uploadId=" in seen.path


def test_a_completion_whose_answer_was_lost_still_commits_the_file(s3_server: S3Server, s3_bucket: str,
                                                                   tmp_path: Path) -> None:
    """The relay forwards CompleteMultipartUpload to moto, which assembles the object, and
    drops the answer; botocore retries, moto answers NoSuchUpload; the object there has the
    parts' composite CRC-32 and the size sent: the file is committed, not failed."""
    faults = Faults(lose_answer=is_completion)
    relay = Relay(s3_server.endpoint_url, faults)
    try:
        data = os.urandom(11 * MiB + 3)
        (tmp_path / "big.bin").write_bytes(data)
        store = make_store(relay.url, s3_server, s3_bucket, upload_cutoff=0)

        writer = upload_file(store, tmp_path / "big.bin")

        assert len(faults.lost) == 1
        assert len([s for s in relay.seen if is_completion(s)]) == 2  # the lost one and its retry
        assert writer.verified_by == "composite-crc32"
        assert s3_server.client().get_object(Bucket=s3_bucket, Key="data/big.bin")["Body"].read() == data
    finally:
        relay.close()


def staged_parts(store: S3Connector, source: Path) -> S3Writer:
    """A writer whose parts are all stored, not yet completed."""
    writer = store.open_write(source.name, staging_id="s:1")
    assert isinstance(writer, S3Writer)
    writer.stage_file(str(source), size=source.stat().st_size, on_step=lambda n: None)
    assert writer._pool is not None
    writer._pool.results()
    return writer


def complete_elsewhere(client: Any, bucket: str, key: str, data: bytes, part: int) -> None:
    """Another multipart upload of ``data`` in parts of ``part`` bytes, completed: the object
    the writer's own completion would have made."""
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32")["UploadId"]
    parts = []
    for number, start in enumerate(range(0, len(data), part), start=1):
        body = data[start:start + part]
        crc = crc32_b64(zlib.crc32(body))
        reply = client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=body,
                                   ChecksumCRC32=crc)
        parts.append({"PartNumber": number, "ETag": reply["ETag"], "ChecksumCRC32": crc})
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                     MultipartUpload={"Parts": parts})


def drop_uploads(client: Any, bucket: str, key: str, keep: str = "") -> None:
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        if upload["UploadId"] != keep:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])


def parts_of_a_gone_upload(s3_server: S3Server, bucket: str, tmp_path: Path) -> tuple[S3Writer, Any, bytes]:
    """A writer that sent every part of an 11 MiB file to ``data/big.bin`` and whose upload
    is then gone (aborted behind its back), the S3 client, and the file's bytes."""
    store = make_store(s3_server.endpoint_url, s3_server, bucket, upload_cutoff=0, max_attempts=1)
    data = os.urandom(11 * MiB)
    (tmp_path / "big.bin").write_bytes(data)
    writer = staged_parts(store, tmp_path / "big.bin")
    client = s3_server.client()
    drop_uploads(client, bucket, "data/big.bin")
    return writer, client, data


def test_a_gone_upload_whose_object_is_the_parts_sent_is_committed(s3_server: S3Server, s3_bucket: str,
                                                                    tmp_path: Path) -> None:
    """The writer's upload is gone when it completes (moto 5.2.5 answers 500, S3 NoSuchUpload)
    and the object at the key has the composite CRC-32 and size of the writer's parts (its
    completion's answer was lost): committed, verified by that checksum."""
    writer, client, data = parts_of_a_gone_upload(s3_server, s3_bucket, tmp_path)
    complete_elsewhere(client, s3_bucket, "data/big.bin", data, 5 * MiB)

    writer.commit()

    assert writer.verified_by == "composite-crc32" and writer.state == "committed"
    assert client.get_object(Bucket=s3_bucket, Key="data/big.bin")["Body"].read() == data


def test_a_gone_upload_with_another_object_at_the_key_fails(s3_server: S3Server, s3_bucket: str,
                                                            tmp_path: Path) -> None:
    """The same with an object of the same size that is not the parts (an older one): the
    file fails; the other object is left as it was."""
    writer, client, data = parts_of_a_gone_upload(s3_server, s3_bucket, tmp_path)
    other = os.urandom(len(data))
    complete_elsewhere(client, s3_bucket, "data/big.bin", other, 5 * MiB)

    with pytest.raises((NotFound, Retryable)):
        writer.commit()

    assert writer.state == "aborted"
    assert client.get_object(Bucket=s3_bucket, Key="data/big.bin")["Body"].read() == other


def test_the_part_size_grows_to_keep_within_s3s_part_count() -> None:
    assert part_size_for(1024 * MiB, 16 * MiB) == 16 * MiB
    assert part_size_for(1024 * MiB, 1 * MiB) == 5 * MiB  # S3's smallest part but the last
    big = 500 * 1024 * MiB  # 500 GiB: 16 MiB parts would be 32,000
    size = part_size_for(big, 16 * MiB)
    assert size % MiB == 0 and -(-big // size) <= MAX_PARTS and size - MiB < -(-big // MAX_PARTS)


def test_a_file_shorter_than_listed_above_the_cutoff_fails_and_leaves_nothing(
        s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "short.bin"
    source.write_bytes(os.urandom(11 * MiB))
    store = make_store(s3_server.endpoint_url, s3_server, s3_bucket, upload_cutoff=0)
    writer = store.open_write("short.bin", staging_id="s:1")
    assert isinstance(writer, S3Writer) and writer.takes_file(12 * MiB)

    with pytest.raises(Fatal, match="the file has 11534336 bytes"):
        writer.stage_file(str(source), size=12 * MiB, on_step=lambda n: None)

    writer.abort()
    with pytest.raises(NotFound):
        store.stat("short.bin")
    assert s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_a_distributed_part_carries_its_crc32_and_a_replayed_commit_checks_the_object(
        s3_server: S3Server, s3_bucket: str, relay: Relay) -> None:
    """Parts written from several nodes: each carries its CRC-32 (S3 checks it) and returns
    S3's MD5 of the stored part; a commit replayed after the object was replaced by another
    of the same size is not taken as done (the size alone said done before)."""
    store = make_store(relay.url, s3_server, s3_bucket, max_attempts=1)
    data = os.urandom(6 * MiB)
    handle = store.begin_distributed("split.bin", size=len(data))
    parts = [store.write_range("split.bin", handle, part_number=n, offset=o, chunks=iter([data[o:o + ln]]),
                               length=ln) for n, o, ln in ((1, 0, 5 * MiB), (2, 5 * MiB, 1 * MiB))]

    for part, (start, end) in zip(parts, ((0, 5 * MiB), (5 * MiB, 6 * MiB)), strict=True):
        assert part["crc32"] == crc32_b64(zlib.crc32(data[start:end]))
        assert part["md5"] == hashlib.md5(data[start:end]).hexdigest()
    sent = [{k.lower(): v for k, v in s.headers.items()} for s in puts(relay)]
    assert [h["x-amz-content-sha256"] for h in sent] == ["UNSIGNED-PAYLOAD"] * 2
    assert all("x-amz-checksum-crc32" in h and "content-md5" not in h for h in sent)
    store.commit_distributed("split.bin", handle, parts, size=len(data))
    client = s3_server.client()
    assert client.get_object(Bucket=s3_bucket, Key="data/split.bin")["Body"].read() == data

    client.put_object(Bucket=s3_bucket, Key="data/split.bin", Body=os.urandom(len(data)),
                      ChecksumAlgorithm="CRC32")
    with pytest.raises((NotFound, Retryable)):
        store.commit_distributed("split.bin", handle, parts, size=len(data))


KILLED_FILE_WRITER = textwrap.dedent("""
    import signal, sys
    from dmg.connectors.base import StoreSpec
    from dmg.connectors.s3 import S3Connector
    endpoint, bucket, key_id, secret, source = sys.argv[1:6]
    spec = StoreSpec("b", "s3", f"s3://{bucket}/data", {
        "endpoint_url": endpoint, "region": "us-east-1", "multipart_threshold": 5 << 20,
        "multipart_chunksize": 5 << 20, "upload_cutoff": 0})
    store = S3Connector(spec, credential={"access_key_id": key_id, "secret_access_key": secret})
    writer = store.open_write("killed.bin", staging_id="s:1")
    writer.stage_file(source, size=16 << 20, on_step=lambda n: None)
    writer._pool.results()  # every part stored, not completed
    print("parts sent", flush=True)
    signal.pause()  # until the test kills it
""")


def test_a_writer_killed_after_sending_a_files_parts_leaves_no_visible_object(
        s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "killed.bin"
    source.write_bytes(os.urandom(16 * MiB))
    cred = s3_server.credential
    kill_once_parts_sent(KILLED_FILE_WRITER, s3_server.endpoint_url, s3_bucket,
                         cred["access_key_id"], cred["secret_access_key"], str(source))

    store = make_store(s3_server.endpoint_url, s3_server, s3_bucket)
    with pytest.raises(NotFound):
        store.stat("killed.bin")
    assert list(store.list()) == []
    assert store.cleanup_staging("s:2", targets=["killed.bin"]) == 1  # the next attempt's cleanup
    assert s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
