"""A local file sent to S3 (moto) in one PutObject streamed from the file: the checksum that
verified it, the cutoff, a file changed after staging, a killed writer, bounded memory."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

from dmg.connectors.base import StoreSpec
from dmg.connectors.file import FileConnector
from dmg.connectors.s3 import S3Connector
from dmg.connectors.s3upload import S3Writer, crc32_b64
from dmg.errors import Fatal, NotFound
from dmg.transfer import CopyOptions, copy_entries
from tests.servers.s3 import S3Server
from tests.waiting import holds_for, wait_for

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


def make_store(server: S3Server, bucket: str, **options: object) -> S3Connector:
    opts = {"endpoint_url": server.endpoint_url, "region": server.region, "max_attempts": 1,
            "multipart_threshold": 5 * MiB, "multipart_chunksize": 5 * MiB, **options}
    return S3Connector(StoreSpec("bucket", "s3", f"s3://{bucket}/data", opts), credential=server.credential)


def a_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def staged_writer(store: S3Connector, source: Path, size: int) -> tuple[S3Writer, str, str]:
    writer = store.open_write(source.name, staging_id="s:1")
    assert isinstance(writer, S3Writer) and writer.takes_file(size)
    checksum, check = writer.stage_file(str(source), size=size, on_step=lambda n: None)
    return writer, checksum, check


def test_a_file_goes_in_one_put_verified_by_the_crc32_s3_answers(
        s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    data = a_file(tmp_path / "one.bin", 6 * MiB + 3)
    store = make_store(s3_server, s3_bucket)
    writer, checksum, check = staged_writer(store, tmp_path / "one.bin", len(data))
    assert (checksum, check) == (f"crc32:{zlib.crc32(data):08x}", "put-crc32")
    with pytest.raises(NotFound):
        store.stat("one.bin")  # staged: nothing sent yet

    writer.commit()

    assert writer.verified_by == "put-crc32"
    head = s3_server.client().head_object(Bucket=s3_bucket, Key="data/one.bin", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == crc32_b64(zlib.crc32(data))
    assert head["ETag"].strip('"') == hashlib.md5(data).hexdigest()  # one PUT, not parts
    assert s3_server.client().get_object(Bucket=s3_bucket, Key="data/one.bin")["Body"].read() == data


def test_the_md5_option_sends_content_md5_and_checks_the_etag(
        s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    data = a_file(tmp_path / "one.bin", 6 * MiB)
    writer, checksum, check = staged_writer(make_store(s3_server, s3_bucket, part_checksum="md5"),
                                            tmp_path / "one.bin", len(data))
    writer.commit()
    assert (checksum, check, writer.verified_by) == (hashlib.md5(data).hexdigest(), "content-md5",
                                                     "content-md5")


def test_the_cutoff_chooses_one_put_or_parts(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    """Below the multipart threshold: bytes in one buffered PUT (Content-MD5); from it up to
    ``upload_cutoff``: one PUT streamed from the file (CRC-32); above: parts read from the
    file (the composite CRC-32 of the parts)."""
    (tmp_path / "src").mkdir()
    sizes = {"small.bin": 1 * MiB, "middle.bin": 6 * MiB, "large.bin": 11 * MiB}
    data = {name: a_file(tmp_path / "src" / name, size) for name, size in sizes.items()}
    source = FileConnector(StoreSpec("src", "file", str(tmp_path / "src")))
    store = make_store(s3_server, s3_bucket, upload_cutoff=8 * MiB)
    writer = store.open_write("x", staging_id="s:1")
    assert isinstance(writer, S3Writer)
    assert [writer.takes_file(n) for n in (5 * MiB - 1, 5 * MiB, 8 * MiB, 8 * MiB + 1)] == [
        False, True, True, True]

    result = copy_entries(source, store, list(source.list()), source_prefix="", sink_prefix="",
                          staging_id="s.1", options=CopyOptions.from_json({}))

    files = {f.path: f for f in result.files}
    assert {p: f.status for p, f in files.items()} == dict.fromkeys(sizes, "copied")
    assert "put-crc32" in files["middle.bin"].verified
    assert files["middle.bin"].checksum == f"crc32:{zlib.crc32(data['middle.bin']):08x}"
    assert files["small.bin"].checksum == hashlib.md5(data["small.bin"]).hexdigest()
    assert "composite-crc32" in files["large.bin"].verified
    assert files["large.bin"].checksum == f"crc32:{zlib.crc32(data['large.bin']):08x}"
    client = s3_server.client()
    etags = {name: client.head_object(Bucket=s3_bucket, Key=f"data/{name}")["ETag"].strip('"')
             for name in sizes}
    assert etags["middle.bin"] == hashlib.md5(data["middle.bin"]).hexdigest()
    assert etags["large.bin"].endswith("-3")  # 5 + 5 + 1 MiB parts
    for name in sizes:
        assert client.get_object(Bucket=s3_bucket, Key=f"data/{name}")["Body"].read() == data[name]


def test_a_file_changed_after_staging_is_refused_and_nothing_is_visible(
        s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    """The bytes sent no longer have the staged CRC-32: the request fails before its body is
    complete (moto 5.2.5 would store whatever it got; S3 would refuse it with BadDigest)."""
    source = tmp_path / "one.bin"
    a_file(source, 6 * MiB)
    store = make_store(s3_server, s3_bucket)
    writer, _, _ = staged_writer(store, source, 6 * MiB)
    with open(source, "r+b") as f:  # same size, other bytes at the end
        f.seek(6 * MiB - 10)
        f.write(b"0123456789")

    with pytest.raises(Fatal, match="CRC-32"):
        writer.commit()

    assert writer.state == "aborted"
    with pytest.raises(NotFound):
        store.stat("one.bin")


def test_a_file_that_shrank_after_staging_is_refused(s3_server: S3Server, s3_bucket: str,
                                                     tmp_path: Path) -> None:
    source = tmp_path / "one.bin"
    a_file(source, 6 * MiB)
    store = make_store(s3_server, s3_bucket)
    writer, _, _ = staged_writer(store, source, 6 * MiB)
    os.truncate(source, 5 * MiB)

    with pytest.raises(Fatal, match="the file ended at"):
        writer.commit()
    with pytest.raises(NotFound):
        store.stat("one.bin")


PUT_WRITER = textwrap.dedent("""
    import resource, sys
    from dmg.connectors.base import StoreSpec
    from dmg.connectors.s3 import S3Connector
    endpoint, bucket, key_id, secret, source, size = sys.argv[1:7]
    spec = StoreSpec("b", "s3", f"s3://{bucket}/data", {"endpoint_url": endpoint, "region": "us-east-1",
                                                        "max_attempts": 1})
    store = S3Connector(spec, credential={"access_key_id": key_id, "secret_access_key": secret})
    writer = store.open_write("put.bin", staging_id="s:1")
    assert writer.takes_file(int(size))
    writer.stage_file(source, size=int(size), on_step=lambda n: None)
    print("staged", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
    writer.commit()
    print("committed", writer.verified_by, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
""")


def put_writer(s3_server: S3Server, bucket: str, source: Path, size: int) -> subprocess.Popen[str]:
    cred = s3_server.credential
    return subprocess.Popen([sys.executable, "-c", PUT_WRITER, s3_server.endpoint_url, bucket,
                             cred["access_key_id"], cred["secret_access_key"], str(source), str(size)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)


def read_bytes(pid: int) -> int:
    """Bytes the process read from files, from /proc/<pid>/io (socket sends are not counted
    in ``wchar``; the body's reads from the file are in ``rchar``)."""
    fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["rchar"])


def test_a_writer_killed_mid_put_leaves_no_visible_object(s3_server: S3Server, s3_bucket: str,
                                                          tmp_path: Path) -> None:
    size = 96 * MiB
    source = tmp_path / "put.bin"
    with open(source, "wb") as f:
        f.truncate(size)  # sparse: quick to make, read at page-cache speed
    proc = put_writer(s3_server, s3_bucket, source, size)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("staged")
        before = read_bytes(proc.pid)
        # The payload is not signed (no SHA-256 pass): the body is read once, as it is sent.
        # Killed as soon as 4 MiB of 96 are sent (a check every 2 ms): a whole body on a quiet
        # machine takes moto well over 0.1 s, so the kill lands mid-body.
        wait_for(lambda: read_bytes(proc.pid) - before > 4 * MiB or None, timeout=60,
                 interval=0.002, what="the PUT's body partly sent")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    store = make_store(s3_server, s3_bucket)
    def absent() -> None:
        with pytest.raises(NotFound):
            store.stat("put.bin")

    holds_for(absent, seconds=2)  # moto's request thread notices the closed connection
    assert list(store.list()) == []


def test_a_large_single_put_keeps_the_writer_small(s3_server: S3Server, s3_bucket: str,
                                                   tmp_path: Path) -> None:
    """96 MiB in one PUT: the writer's peak RSS grows by far less than the file (the body is
    streamed from it, never held)."""
    size = 96 * MiB
    source = tmp_path / "put.bin"
    with open(source, "wb") as f:
        f.truncate(size)
    proc = put_writer(s3_server, s3_bucket, source, size)
    out, _ = proc.communicate(timeout=300)
    staged, committed = out.split("\n")[:2]
    assert committed.split()[:2] == ["committed", "put-crc32"]
    grown_mib = (int(committed.split()[2]) - int(staged.split()[1])) / 1024
    assert grown_mib < 32, f"the writer grew by {grown_mib:.0f} MiB during a {size // MiB} MiB PUT"
    head = s3_server.client().head_object(Bucket=s3_bucket, Key="data/put.bin")
    assert head["ContentLength"] == size
    s3_server.client().delete_object(Bucket=s3_bucket, Key="data/put.bin")
