"""Part shards file → S3: each part read from the file once and sent with its CRC-32.

Real Redis, a real moto server behind a relay (:mod:`tests.servers.relay`) that records
what each request carried and can damage a part's body in transit; the real planner and
``run_shard``. No MD5 of the node's own: S3 checks each part's CRC-32 on receipt (moto
5.2.5 does not, but computes the parts' CRC-32 from the bytes it stored), and the commit
checks the composite CRC-32 S3 answers; the file's result says so.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher.planner import plan_activity_run
from dmg.connectors import Connector, StoreSpec, connector_for
from dmg.connectors.s3 import S3Connector
from dmg.ids import split_object_id
from dmg.shards.status import OUTCOME_FAILED, OUTCOME_SUCCEEDED
from dmg.site.splits import ABORTED, DONE, SplitObjects
from dmg.site.state import SiteState
from settings import Settings
from tests.dispatcher.memcloud import MemoryCloud
from tests.servers.relay import Faults, Relay, Seen, flip_a_byte_of_part
from tests.servers.s3 import S3Server
from tests.workers.support import file_store, write_files
from workers.run.reporter import MemoryReporter
from workers.run.shard import run_shard

MIB = 1024 * 1024
SETTINGS = Settings(shard_max_files=4)
OBJECT = split_object_id("ar1", 0)
SIZE = 12 * MIB  # parts of 5, 5 and 2 MiB
PART = 5 * MIB


def sink_spec(relay: Relay, server: S3Server, bucket: str) -> StoreSpec:
    return StoreSpec("dst", "s3", f"s3://{bucket}/out", {"endpoint_url": relay.url, "region": server.region,
                                                         "max_attempts": 1})


def factory(server: S3Server) -> Callable[[StoreSpec], Connector]:
    def make(spec: StoreSpec) -> Connector:
        return S3Connector(spec, credential=server.credential) if spec.type == "s3" else connector_for(spec)
    return make


def plan(tmp_path: Path, state: SiteState, sink: StoreSpec, server: S3Server) -> list[str]:
    run = {"id": "ar1", "run_id": "r1", "name": "big",
           "source": {"store": file_store("src", tmp_path / "src").to_json(), "path": ""},
           "sink": {"store": sink.to_json(), "path": ""},
           "options": {"split_above": 8 * MIB, "split_part_size": PART, "overwrite": "always", "retries": 0}}
    result = plan_activity_run(run, state=state, cloud=MemoryCloud(), epoch=1, settings=SETTINGS,
                               connector_factory=factory(server))
    return [s["id"] for s in result.shards]


def run_all(state: SiteState, ids: list[str], server: S3Server) -> MemoryReporter:
    reporter = MemoryReporter()
    for shard_id in ids:
        attempt = state.new_attempt(shard_id, "node1")
        run_shard(shard_id, attempt, node="node1", state=state, reporter=reporter,
                  connector_factory=factory(server))
    return reporter


def part_puts(relay: Relay) -> list[Seen]:
    return [s for s in relay.seen if s.method == "PUT" and "partNumber=" in s.path]


def crc_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


@pytest.fixture
def data(tmp_path: Path) -> bytes:
    write_files(tmp_path / "src", {"big.bin": SIZE})
    return (tmp_path / "src" / "big.bin").read_bytes()


@pytest.fixture
def relay(s3_server: S3Server) -> Iterator[Relay]:
    relay = Relay(s3_server.endpoint_url)
    yield relay
    relay.close()


def outcomes(reporter: MemoryReporter) -> list[str]:
    return [r["status"] for _id, r in reporter.reports if r["status"] in (OUTCOME_SUCCEEDED, OUTCOME_FAILED)]


def test_each_part_is_sent_once_from_the_file_with_its_crc32_and_the_file_reports_it(
        tmp_path: Path, state: SiteState, data: bytes, s3_server: S3Server, s3_bucket: str,
        relay: Relay) -> None:
    ids = plan(tmp_path, state, sink_spec(relay, s3_server, s3_bucket), s3_server)

    reporter = run_all(state, ids, s3_server)

    assert outcomes(reporter) == [OUTCOME_SUCCEEDED] * 3
    puts = sorted(part_puts(relay), key=lambda s: s.path)
    ranges = [data[:PART], data[PART:2 * PART], data[2 * PART:]]
    assert [p.body for p in puts] == ranges  # one request per part, the range as it is
    for put, body in zip(puts, ranges, strict=True):
        assert {k.lower(): v for k, v in put.headers.items()}["x-amz-checksum-crc32"] == crc_b64(body)
    assert s3_server.client().get_object(Bucket=s3_bucket, Key="out/big.bin")["Body"].read() == data
    [result] = [f for _id, r in reporter.reports for f in r.get("file_results") or []]
    composite = zlib.crc32(b"".join(zlib.crc32(b).to_bytes(4, "big") for b in ranges))
    assert result["checksum"] == f"crc32:{composite:08x}-3"
    assert result["verified"] == "size,part-crc32"
    assert SplitObjects(state).marker(OBJECT) == DONE


def test_a_part_damaged_in_transit_is_refused_and_nothing_is_visible(
        tmp_path: Path, state: SiteState, data: bytes, s3_server: S3Server, s3_bucket: str) -> None:
    """One flipped byte in part 2's body: S3 refuses the part (BadDigest); moto 5.2.5 stores
    it, and the composite CRC-32 at commit differs: the object is deleted, the run fails."""
    relay = Relay(s3_server.endpoint_url, Faults(change_body=flip_a_byte_of_part(2)))
    try:
        ids = plan(tmp_path, state, sink_spec(relay, s3_server, s3_bucket), s3_server)

        reporter = run_all(state, ids, s3_server)

        assert outcomes(reporter)[-1] == OUTCOME_FAILED
        errors = [r.get("error") or "" for _id, r in reporter.reports if r["status"] == OUTCOME_FAILED]
        assert any("composite CRC-32" in e for e in errors), errors
        client = s3_server.client()
        assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
        assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
        assert SplitObjects(state).marker(OBJECT) == ABORTED
    finally:
        relay.close()


def test_a_source_cut_short_after_planning_fails_its_part_and_leaves_nothing(
        tmp_path: Path, state: SiteState, data: bytes, s3_server: S3Server, s3_bucket: str,
        relay: Relay) -> None:
    ids = plan(tmp_path, state, sink_spec(relay, s3_server, s3_bucket), s3_server)
    with open(tmp_path / "src" / "big.bin", "r+b") as f:
        f.truncate(7 * MIB)

    reporter = run_all(state, ids, s3_server)

    errors: list[Any] = [r.get("error") for _id, r in reporter.reports if r["status"] == OUTCOME_FAILED]
    assert errors and "expected" in str(errors[0]), errors
    client = s3_server.client()
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
