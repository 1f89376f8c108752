"""Part shards file → file: the kernel copies each range, XXH3 of both sides verifies it.

Real Redis, real file stores, the real planner; a part whose written range is corrupted
between the copy and its check comes from a file store of our own (a subclass of the real
one that flips a byte of the range it just wrote), not from a mock.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import xxhash

from dispatcher.planner import plan_activity_run
from dmg.connectors import Connector, StoreSpec, connector_for
from dmg.connectors.file import FileConnector
from dmg.ids import split_object_id
from dmg.shards.status import OUTCOME_FAILED, OUTCOME_SUCCEEDED
from dmg.site.splits import ABORTED, DONE, SplitObjects
from dmg.site.state import SiteState
from settings import Settings
from tests.dispatcher.memcloud import MemoryCloud
from tests.workers.support import file_store, write_files
from workers.run.reporter import MemoryReporter
from workers.run.shard import run_shard

MIB = 1024 * 1024
SETTINGS = Settings(shard_max_files=4)
OBJECT = split_object_id("ar1", 0)
#: 12 MiB in parts of 5 MiB: parts of 5, 5 and 2 MiB.
SIZE = 12 * MIB
PART = 5 * MIB


class CorruptingFileStore(FileConnector):
    """The file store, except that the range of part ``corrupt_part`` gets one byte flipped
    right after the kernel wrote it (a disk or a bug that broke it before the commit)."""

    corrupt_part = 2

    def copy_range_in(self, path: str, handle: dict[str, Any], *, part_number: int, offset: int,
                      length: int, source_file: str, on_step: Callable[[int], None]) -> str:
        source_hash = super().copy_range_in(path, handle, part_number=part_number, offset=offset,
                                            length=length, source_file=source_file, on_step=on_step)
        if part_number == self.corrupt_part:
            _target, staging = self._distributed_staging(path, handle)
            fd = os.open(staging, os.O_RDWR)
            try:
                byte = os.pread(fd, 1, offset + length // 2)
                os.pwrite(fd, bytes([byte[0] ^ 0xFF]), offset + length // 2)
            finally:
                os.close(fd)
        return source_hash


def plan(tmp_path: Path, state: SiteState, options: dict[str, Any] | None = None) -> list[str]:
    run = {"id": "ar1", "run_id": "r1", "name": "big",
           "source": {"store": file_store("src", tmp_path / "src").to_json(), "path": ""},
           "sink": {"store": file_store("dst", tmp_path / "dst").to_json(), "path": "out"},
           "options": {"split_above": 8 * MIB, "split_part_size": PART, "overwrite": "always",
                       **(options or {})}}
    result = plan_activity_run(run, state=state, cloud=MemoryCloud(), epoch=1, settings=SETTINGS)
    return [s["id"] for s in result.shards]


def run_on(state: SiteState, shard_id: str, reporter: MemoryReporter,
           factory: Callable[[StoreSpec], Connector] = connector_for) -> Any:
    attempt = state.new_attempt(shard_id, "node1")
    return run_shard(shard_id, attempt, node="node1", state=state, reporter=reporter,
                     connector_factory=factory)


def corrupting(spec: StoreSpec) -> Connector:
    return CorruptingFileStore(spec) if spec.name == "dst" else connector_for(spec)


@pytest.fixture
def data(tmp_path: Path) -> bytes:
    write_files(tmp_path / "src", {"big.bin": SIZE})
    return (tmp_path / "src" / "big.bin").read_bytes()


def xxh3(data: bytes) -> str:
    return "xxh3:" + xxhash.xxh3_128_hexdigest(data)


def committed_result(reporter: MemoryReporter) -> dict[str, Any]:
    files = [f for _id, r in reporter.reports if r["status"] == OUTCOME_SUCCEEDED
             for f in r.get("file_results") or []]
    assert len(files) == 1, files
    return files[0]


def test_a_three_part_file_copy_goes_through_the_kernel_and_reports_xxh3_per_part(
        tmp_path: Path, state: SiteState, data: bytes) -> None:
    ids = plan(tmp_path, state)
    assert len(ids) == 3
    reporter = MemoryReporter()

    outcomes = [run_on(state, shard_id, reporter) for shard_id in ids]

    assert [o.status for o in outcomes] == [OUTCOME_SUCCEEDED] * 3
    assert (tmp_path / "dst" / "out" / "big.bin").read_bytes() == data
    parts = SplitObjects(state).parts(OBJECT)
    ranges = [data[0:PART], data[PART:2 * PART], data[2 * PART:]]
    # each part was verified by the XXH3 of its range (the kernel path), not by an MD5
    assert [(p["part_number"], p["xxh3"], p.get("md5")) for p in parts] == [
        (n + 1, xxh3(r), None) for n, r in enumerate(ranges)]
    result = committed_result(reporter)
    joined = b"".join(bytes.fromhex(xxh3(r).removeprefix("xxh3:")) for r in ranges)
    assert result["checksum"] == f"xxh3:{xxhash.xxh3_128_hexdigest(joined)}-3"
    assert result["verified"] == "size,part-xxh3"
    assert result["bytes"] == SIZE


def test_a_part_copied_again_rewrites_the_same_range(tmp_path: Path, state: SiteState, data: bytes) -> None:
    ids = plan(tmp_path, state)
    reporter = MemoryReporter()
    first = run_on(state, ids[1], reporter)
    # the dispatcher lost track of it (its node was declared dead): a new attempt copies it again
    again = run_on(state, ids[1], reporter)
    rest = [run_on(state, shard_id, reporter) for shard_id in (ids[0], ids[2])]

    assert [o.status for o in (first, again, *rest)] == [OUTCOME_SUCCEEDED] * 4
    assert again.attempt == 2
    assert (tmp_path / "dst" / "out" / "big.bin").read_bytes() == data
    assert SplitObjects(state).marker(OBJECT) == DONE
    assert committed_result(reporter)["checksum"].endswith("-3")


def test_a_part_corrupted_before_the_commit_fails_and_nothing_is_committed(
        tmp_path: Path, state: SiteState, data: bytes) -> None:
    ids = plan(tmp_path, state)
    reporter = MemoryReporter()

    first = run_on(state, ids[0], reporter, corrupting)
    broken = run_on(state, ids[1], reporter, corrupting)
    last = run_on(state, ids[2], reporter, corrupting)

    assert first.status == OUTCOME_SUCCEEDED
    assert broken.status == OUTCOME_FAILED
    assert "checksum mismatch (part 2" in broken.error
    assert last.status == OUTCOME_FAILED and "abandoned" in last.error
    assert SplitObjects(state).marker(OBJECT) == ABORTED
    assert list((tmp_path / "dst" / "out").iterdir()) == []  # the write was aborted: no staging, no target


def test_a_source_cut_short_after_planning_fails_its_part(tmp_path: Path, state: SiteState,
                                                          data: bytes) -> None:
    ids = plan(tmp_path, state)
    os.truncate(tmp_path / "src" / "big.bin", SIZE - MIB)  # the file changed after it was listed
    reporter = MemoryReporter()

    outcome = run_on(state, ids[2], reporter)

    assert outcome.status == OUTCOME_FAILED
    assert "expected" in outcome.error and "part 3" in outcome.error
    assert not (tmp_path / "dst" / "out" / "big.bin").exists()


def test_a_bandwidth_limit_keeps_the_streamed_md5_path(tmp_path: Path, state: SiteState, data: bytes) -> None:
    ids = plan(tmp_path, state, {"bandwidth": "10GB/s"})  # paced in user space: MD5 as bytes pass
    reporter = MemoryReporter()

    outcomes = [run_on(state, shard_id, reporter) for shard_id in ids]

    assert [o.status for o in outcomes] == [OUTCOME_SUCCEEDED] * 3
    assert (tmp_path / "dst" / "out" / "big.bin").read_bytes() == data
    parts = SplitObjects(state).parts(OBJECT)
    expected = [hashlib.md5(data[o:o + PART]).hexdigest() for o in (0, PART, 2 * PART)]
    assert [p["md5"] for p in parts] == expected
    assert all("xxh3" not in p for p in parts)
    result = committed_result(reporter)
    assert result["verified"] == "size,part-md5" and result["checksum"].endswith("-3")
