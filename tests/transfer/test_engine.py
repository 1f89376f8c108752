"""The copy engine over real file stores and the in-memory store: copies, skips,
overwrite modes, filters, checksums, retries, fencing."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest
import xxhash

from dmg.connectors.base import Entry, StagedWriter, StoreSpec
from dmg.connectors.capabilities import StagedCrc32
from dmg.connectors.file import FileConnector
from dmg.errors import Cancelled, NotFound, PermissionDenied, Retryable, StaleAttempt
from dmg.transfer import CopyOptions, copy_entries
from dmg.transfer import engine as engine_module
from tests.transfer.memstore import MemoryConnector, RangedMemoryConnector
from tests.workers.support import tree, write_files

MiB = 1024 * 1024


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def xxh3(data: bytes) -> str:
    return "xxh3:" + xxhash.xxh3_128_hexdigest(data)


def stores(tmp_path: Path) -> tuple[FileConnector, FileConnector]:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "dst").mkdir(exist_ok=True)
    return (FileConnector(StoreSpec("src", "file", str(tmp_path / "src"))),
            FileConnector(StoreSpec("dst", "file", str(tmp_path / "dst"))))


def copy(source: Any, sink: Any, *, prefix: str = "in", options: dict[str, Any] | None = None,
         **kwargs: Any) -> Any:
    entries = list(source.list(prefix))
    return copy_entries(source, sink, entries, source_prefix=prefix, sink_prefix="out",
                        staging_id=kwargs.pop("staging_id", "s.1"), options=CopyOptions.from_json(options),
                        sleep=kwargs.pop("sleep", lambda _s: None), **kwargs)


def by_path(result: Any) -> dict[str, Any]:
    return {f.path: f for f in result.files}


def test_files_are_copied_with_their_checksums_and_modified_times(tmp_path: Path) -> None:
    source, sink = stores(tmp_path)
    write_files(tmp_path / "src" / "in", {"a.bin": 70_000, "sub/b.bin": 5 * MiB + 7, "empty": 0})
    os.utime(tmp_path / "src" / "in" / "a.bin", (1_600_000_000, 1_600_000_000))
    moved: list[int] = []

    result = copy(source, sink, on_bytes=moved.append)

    assert tree(tmp_path / "dst" / "out") == tree(tmp_path / "src" / "in")
    files = by_path(result)
    assert [f.status for f in result.files] == ["copied"] * 3
    # File to file: the kernel copied, the XXH3 of the source and of the staged file agreed.
    assert files["out/sub/b.bin"].checksum == xxh3((tmp_path / "src/in/sub/b.bin").read_bytes())
    assert files["out/sub/b.bin"].source == "in/sub/b.bin" and files["out/sub/b.bin"].tries == 1
    assert files["out/a.bin"].verified == "size,xxh3"  # the staging file was re-read
    assert (tmp_path / "dst/out/a.bin").stat().st_mtime == 1_600_000_000
    assert result.bytes == sum(moved) == 70_000 + 5 * MiB + 7
    assert not [p for p in (tmp_path / "dst").rglob(".dmg-staging*")]


def test_a_second_copy_skips_what_the_sink_already_has(tmp_path: Path) -> None:
    source, sink = stores(tmp_path)
    write_files(tmp_path / "src" / "in", {"same": 1000, "grows": 1000, "touched": 1000})
    copy(source, sink)
    write_files(tmp_path / "src" / "in", {"grows": 2000})
    touched = tmp_path / "src/in/touched"
    os.utime(touched, (touched.stat().st_mtime + 100, touched.stat().st_mtime + 100))

    again = by_path(copy(source, sink, staging_id="s.2"))

    assert again["out/same"].status == "skipped" and again["out/same"].error == "same size and modified time"
    assert again["out/same"].bytes == 1000
    assert again["out/grows"].status == "copied"
    assert again["out/touched"].status == "copied"  # a file store keeps mtimes: this one changed
    assert tree(tmp_path / "dst" / "out") == tree(tmp_path / "src" / "in")


def test_overwrite_never_keeps_and_always_replaces(tmp_path: Path) -> None:
    source, sink = stores(tmp_path)
    write_files(tmp_path / "src" / "in", {"a": 10, "b": 10})
    write_files(tmp_path / "dst" / "out", {"a": 99})
    kept = (tmp_path / "dst/out/a").read_bytes()

    never = by_path(copy(source, sink, options={"overwrite": "never"}))
    assert never["out/a"].status == "skipped" and (tmp_path / "dst/out/a").read_bytes() == kept
    assert never["out/b"].status == "copied"

    always = by_path(copy(source, sink, options={"overwrite": "always"}, staging_id="s.2"))
    assert [f.status for f in always.values()] == ["copied", "copied"]
    assert tree(tmp_path / "dst" / "out") == tree(tmp_path / "src" / "in")


def test_overwrite_if_newer_copies_only_newer_sources(tmp_path: Path) -> None:
    source, sink = stores(tmp_path)
    write_files(tmp_path / "src" / "in", {"old": 10, "new": 10})
    write_files(tmp_path / "dst" / "out", {"old": 20, "new": 20})
    os.utime(tmp_path / "src/in/old", (1_000_000_000, 1_000_000_000))
    os.utime(tmp_path / "dst/out/new", (1_000_000_000, 1_000_000_000))

    result = by_path(copy(source, sink, options={"overwrite": "if-newer"}))

    assert result["out/old"].status == "skipped" and (tmp_path / "dst/out/old").stat().st_size == 20
    assert result["out/new"].status == "copied" and (tmp_path / "dst/out/new").stat().st_size == 10


def test_filters_choose_the_files(tmp_path: Path) -> None:
    source, sink = stores(tmp_path)
    write_files(tmp_path / "src" / "in", {"a.csv": 1, "b.log": 1, "tmp/c.csv": 1, "d/e.csv": 1})

    result = copy(source, sink, options={"include": ["*.csv"], "exclude": ["tmp/"]})

    assert [f.path for f in result.files] == ["out/a.csv", "out/d/e.csv"]
    assert sorted(tree(tmp_path / "dst" / "out")) == ["a.csv", "d/e.csv"]


def test_a_corrupted_read_is_never_committed() -> None:
    source, sink = MemoryConnector(), MemoryConnector()
    source.put("in/good", b"g" * 1000)
    source.put("in/bad", b"b" * 1000)
    entries = list(source.list("in"))
    source.corrupt_reads = True  # the listing keeps the true checksums

    result = copy_entries(source, sink, entries, source_prefix="in", sink_prefix="out", staging_id="s.1",
                          options=CopyOptions(retries=2))

    assert [f.status for f in result.files] == ["failed", "failed"]
    assert "checksum mismatch (source checksum" in result.files[0].error
    assert result.files[0].tries == 1  # a mismatch is not retried
    assert sink.objects == {} and sink.commits == [] and sink.staging == {}


def test_corrupted_staged_bytes_are_never_committed() -> None:
    source, sink = MemoryConnector(), MemoryConnector()
    source.put("in/f", os.urandom(10_000))
    sink.corrupt_writes = True

    result = copy(source, sink)

    assert result.files[0].status == "failed" and "staged bytes" in result.files[0].error
    assert sink.commits == [] and sink.staging == {}


class _FlippingWriter(StagedWriter, StagedCrc32):
    """Passes every chunk on to the real file writer with its first byte flipped."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner.what)
        self.inner = inner

    def _write(self, chunk: bytes) -> None:
        self.inner.write(bytes([chunk[0] ^ 1]) + chunk[1:] if chunk else chunk)

    def staged_crc32(self) -> int:
        return int(self.inner.staged_crc32())

    def _commit(self, mtime: float | None) -> None:
        self.inner.commit(mtime=mtime)

    def _abort(self) -> None:
        self.inner.abort()


class FlippingFileConnector(FileConnector):
    """A real file store whose writes go wrong on the way to disk."""

    def open_write(self, path: str, *, staging_id: str) -> StagedWriter:
        return _FlippingWriter(super().open_write(path, staging_id=staging_id))


def test_a_file_sink_verifies_its_staging_file_before_the_rename(tmp_path: Path) -> None:
    source, _ = stores(tmp_path)
    sink = FlippingFileConnector(StoreSpec("dst", "file", str(tmp_path / "dst")))
    write_files(tmp_path / "src" / "in", {"x": 4096})

    result = copy(source, sink)

    assert result.files[0].status == "failed" and "checksum mismatch (staged bytes" in result.files[0].error
    assert tree(tmp_path / "dst") == {}  # neither the target nor a staging file


class _CommitCorrupts(MemoryConnector):
    """A sink with a bug at commit: the object it stores is not what was staged."""

    def put(self, path: str, data: bytes, *, mtime: float | None = None) -> None:
        # The last byte flipped: a random last byte that is already b"?" made it a no-op (1 in 256).
        super().put(path, data[:-1] + bytes([data[-1] ^ 0xFF]) if data else data, mtime=mtime)


def test_a_committed_object_that_does_not_match_is_removed_and_failed() -> None:
    source, sink = MemoryConnector(), _CommitCorrupts()
    source.put("in/big", os.urandom(2 * MiB))

    result = copy(source, sink)

    assert result.files[0].status == "failed" and "sink checksum" in result.files[0].error
    assert sink.objects == {}


def test_re_read_verification_reads_the_committed_file_back(tmp_path: Path) -> None:
    source, sink = stores(tmp_path)
    write_files(tmp_path / "src" / "in", {"f": 3000})
    result = copy(source, sink, options={"verify": "re-read"})
    assert result.files[0].verified == "size,xxh3,re-read"
    off = copy(source, sink, options={"verify": False, "overwrite": "always"}, staging_id="s.2")
    assert off.files[0].verified == "size"


def test_retryable_errors_are_retried_with_backoff() -> None:
    source, sink = MemoryConnector(), MemoryConnector()
    source.put("in/f", b"x" * 100)
    source.read_faults = [Retryable("busy"), Retryable("still busy")]
    pauses: list[float] = []

    result = copy(source, sink, options={"retries": 3, "retry_backoff": 0.25}, sleep=pauses.append)

    assert result.files[0].status == "copied" and result.files[0].tries == 3
    assert pauses == [0.25, 0.5]
    assert sink.objects["out/f"][0] == b"x" * 100


def test_retries_give_up_after_the_last_one() -> None:
    source, sink = MemoryConnector(), MemoryConnector()
    source.put("in/f", b"x")
    source.read_faults = [Retryable(f"busy {n}") for n in range(3)]

    result = copy(source, sink, options={"retries": 2, "retry_backoff": 0})

    assert result.files[0].status == "failed" and result.files[0].tries == 3
    assert result.files[0].error == "busy 2" and sink.commits == []


@pytest.mark.parametrize("error", [PermissionDenied("denied"), NotFound("gone")])
def test_other_errors_fail_the_file_at_once(error: Exception) -> None:
    source, sink = MemoryConnector(), MemoryConnector()
    source.put("in/a", b"a")
    source.put("in/b", b"b")
    source.read_faults = [error]  # hits whichever file reads first
    pauses: list[float] = []

    result = copy(source, sink, options={"parallel_files": 1}, sleep=pauses.append)

    assert [f.status for f in result.files] == ["failed", "copied"]
    assert result.files[0].tries == 1 and pauses == []
    assert str(error) in result.files[0].error


def test_a_retryable_stat_of_the_sink_is_retried() -> None:
    source, sink = MemoryConnector(), MemoryConnector()
    source.put("in/a", b"a")
    sink.stat_faults = [Retryable("throttled")]
    result = copy(source, sink, options={"retry_backoff": 0})
    assert result.files[0].status == "copied"


def test_a_fenced_attempt_stops_and_commits_nothing_more(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Given 20 small files in 4 batches of 5, when the attempt is fenced after two
    batches' checks, then those two batches are committed whole and nothing of the
    others: no file, no staging file."""
    monkeypatch.setattr(engine_module, "INLINE_BATCH_FILES", 5)
    source, sink = stores(tmp_path)
    write_files(tmp_path / "src" / "in", {f"f{i:02d}": 1000 for i in range(20)})
    commits = {"left": 2}

    def may_commit() -> bool:
        commits["left"] -= 1
        return commits["left"] >= 0

    with pytest.raises(StaleAttempt):
        copy(source, sink, may_commit=may_commit, options={"parallel_files": 4})

    assert len(tree(tmp_path / "dst")) == 10  # two batches before the fence, no staging left


def test_small_files_are_fenced_once_per_batch_and_large_ones_once_each(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "BATCH_SECONDS", 60.0)  # a loaded machine splits no batch
    monkeypatch.setattr(engine_module, "CHECK_FRESH_FOR", 60.0)
    source, sink = stores(tmp_path)
    write_files(tmp_path / "src" / "in", {**{f"s{i:03d}": 100 for i in range(200)}, "big": 2 * MiB})
    asked: list[float] = []

    result = copy(source, sink, may_commit=lambda: asked.append(time.monotonic()) is None,
                  options={"parallel_files": 4})

    assert [f.status for f in result.files] == ["copied"] * 201
    assert len(asked) == 4 + 1  # 200 small files in 4 batches of 50, the large one alone
    assert tree(tmp_path / "dst" / "out") == tree(tmp_path / "src" / "in")


def test_local_small_files_copied_inline_are_fenced_once_per_batch_of_at_most_256(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given 600 small files between two local file stores (copied inline, no pool), then
    they are checked once per batch, whatever ``parallel_files`` says: batches of at most
    256 files and half of what is left, down to 16 at the end (256, 172, 86, 43, 22, 16, 5)."""
    monkeypatch.setattr(engine_module, "BATCH_SECONDS", 60.0)
    monkeypatch.setattr(engine_module, "CHECK_FRESH_FOR", 60.0)
    source, sink = stores(tmp_path)
    write_files(tmp_path / "src" / "in", {f"s{i:03d}": 100 for i in range(600)})
    asked: list[float] = []

    result = copy(source, sink, may_commit=lambda: asked.append(time.monotonic()) is None,
                  options={"parallel_files": 4})

    assert [f.status for f in result.files] == ["copied"] * 600
    assert len(asked) == 7
    assert tree(tmp_path / "dst" / "out") == tree(tmp_path / "src" / "in")


def test_the_last_inline_batches_of_a_shard_are_small(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Given 1,250 small local files (one shard of tiny files), then the files reach
    ``on_file`` batch by batch in batches of at most 256 and half of what is left, the last
    one of at most 16 files: the shard's final report carries only a few results."""
    monkeypatch.setattr(engine_module, "BATCH_SECONDS", 60.0)
    source, sink = stores(tmp_path)
    write_files(tmp_path / "src" / "in", {f"d{i // 100}/s{i:04d}": 10 for i in range(1250)})
    reported: list[int] = []
    at_check: list[int] = []

    result = copy(source, sink, on_file=lambda _f: reported.append(1),
                  may_commit=lambda: at_check.append(len(reported)) is None)

    assert [f.status for f in result.files] == ["copied"] * 1250
    batches = [after - before for before, after in zip(at_check, [*at_check[1:], len(reported)], strict=True)]
    assert batches == [256, 256, 256, 241, 121, 60, 30, 16, 14]
    assert tree(tmp_path / "dst" / "out") == tree(tmp_path / "src" / "in")


def test_a_batch_that_waited_after_its_check_checks_again_before_each_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given a batch whose check is trusted for no time at all (a process paused right
    after its check), when the attempt is fenced after the first commit, then the next
    commit's own check sees it and nothing more of the batch is committed."""
    monkeypatch.setattr(engine_module, "CHECK_FRESH_FOR", -1.0)
    source, sink = stores(tmp_path)
    write_files(tmp_path / "src" / "in", {f"f{i}": 100 for i in range(5)})
    answers = iter([True, False])

    with pytest.raises(StaleAttempt):
        copy(source, sink, may_commit=lambda: next(answers, False), options={"parallel_files": 1})

    assert len(tree(tmp_path / "dst")) == 1
    assert not [p for p in (tmp_path / "dst").rglob(".dmg-staging*")]


def test_a_stop_reason_stops_files_mid_stream_and_leaves_no_staging(tmp_path: Path) -> None:
    """Given large files copied at 1 MiB/s, when ``stop_reason`` says why after half a
    second, the copy raises Cancelled within a second: the first file, committed
    before, stays; the files in flight leave no staging file and nothing committed."""
    source, sink = stores(tmp_path)
    write_files(tmp_path / "src" / "in", {"a-small": 1000, "big1": 8 * MiB, "big2": 8 * MiB})
    asked: list[float] = []
    began = time.monotonic()

    def stop_reason() -> str:
        asked.append(time.monotonic() - began)
        return "the run was cancelled" if asked[-1] > 0.5 else ""

    with pytest.raises(Cancelled, match="the run was cancelled"):
        copy(source, sink, options={"parallel_files": 1, "bandwidth": MiB}, stop_reason=stop_reason,
             sleep=time.sleep, tick=0.1)

    assert time.monotonic() - began < 3
    assert list(tree(tmp_path / "dst")) == ["out/a-small"]  # committed before the stop; no staging


def test_many_small_files_in_parallel_come_back_in_order(tmp_path: Path) -> None:
    source, sink = stores(tmp_path)
    write_files(tmp_path / "src" / "in", {f"d{i % 7}/f{i:03d}": 100 + i for i in range(150)})
    seen: list[str] = []
    ticks: list[int] = []

    result = copy(source, sink, options={"parallel_files": 8}, on_file=lambda f: seen.append(f.path),
                  on_tick=lambda: ticks.append(1))

    assert [f.path for f in result.files] == sorted(f.path for f in result.files)
    assert sorted(seen) == sorted(f.path for f in result.files) and len(seen) == 150
    assert ticks and result.copied == 150
    assert tree(tmp_path / "dst" / "out") == tree(tmp_path / "src" / "in")


def test_planner_hints_replace_the_stat_of_the_sink() -> None:
    source, sink = MemoryConnector(), MemoryConnector()
    source.put("in/a", b"aaaa", mtime=100.0)
    source.put("in/b", b"bbbb", mtime=100.0)
    sink.stat_faults = [PermissionDenied("no stat for you")]  # would fail any stat
    hints: dict[str, Entry | None] = {"in/a": Entry("out/a", 4, 100.0, md5(b"aaaa")), "in/b": None}

    result = copy_entries(source, sink, list(source.list("in")), source_prefix="in", sink_prefix="out",
                          staging_id="s.1", sink_hints=hints)

    assert [(f.path, f.status) for f in result.files] == [("out/a", "skipped"), ("out/b", "copied")]
    assert sink.stat_faults  # never consulted


def test_the_old_signature_still_works(tmp_path: Path) -> None:
    source, sink = stores(tmp_path)
    write_files(tmp_path / "src" / "in", {"a": 10})
    result = copy_entries(source, sink, list(source.list("in")), source_prefix="in", sink_prefix="out",
                          staging_id="x.1", bandwidth=0)
    assert result.copied == 1 and result.to_json()["copied"] == 1


def test_a_large_object_of_a_ranged_store_comes_in_parallel_parts() -> None:
    source, sink = RangedMemoryConnector(), MemoryConnector()
    data = os.urandom(1 * MiB + 5)
    source.put("in/big", data)

    result = copy(source, sink, options={"part_size": 64 * 1024, "parallel_parts": 4})

    assert result.files[0].status == "copied" and "source-md5" in result.files[0].verified
    assert sink.objects["out/big"][0] == data
    assert source.reads == 17  # one ranged read per 64 KiB part


def test_a_ranged_object_that_shrank_fails_on_its_size() -> None:
    source, sink = RangedMemoryConnector(), MemoryConnector()
    source.put("in/big", os.urandom(1 * MiB))
    entries = list(source.list("in"))
    source.put("in/big", os.urandom(300_000))  # shorter than listed

    result = copy_entries(source, sink, entries, source_prefix="in", sink_prefix="out", staging_id="s.1",
                          options=CopyOptions(part_size=64 * 1024, retries=0))

    assert result.files[0].status == "failed" and "read 300000 bytes, the listing said 1048576" in \
        result.files[0].error
    assert sink.commits == []


def test_a_file_that_shrank_after_listing_fails_in_the_kernel_copy_and_leaves_nothing(tmp_path: Path) -> None:
    source, sink = stores(tmp_path)
    write_files(tmp_path / "src" / "in", {"big": 3 * MiB, "small": 5000})
    entries = list(source.list("in"))
    (tmp_path / "src/in/big").write_bytes(b"x" * MiB)
    (tmp_path / "src/in/small").write_bytes(b"y" * 10)

    result = copy_entries(source, sink, entries, source_prefix="in", sink_prefix="out", staging_id="s.1",
                          options=CopyOptions.from_json({"retries": 0}))

    assert [f.status for f in result.files] == ["failed", "failed"]
    assert "read 1048576 bytes, the listing said 3145728" in result.files[0].error
    assert not list((tmp_path / "dst").rglob("*.*")) and not (tmp_path / "dst/out/big").exists()



@pytest.mark.parametrize("size", [5000, 3 * MiB + 5])
def test_a_kernel_copy_that_writes_a_wrong_byte_is_caught_and_never_committed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """Given a kernel copy that flips one byte of the staged file (a small file: one pread
    hash; a large one: the mapped hash of the staging file), then the XXH3 of the staged
    file differs from the source's, the file fails and nothing is visible at the sink."""
    from dmg.connectors import localcopy

    real_copy = localcopy.copy_fd

    def flipping_copy(src: int, dst: int, n: int, **kwargs: Any) -> int:
        copied = real_copy(src, dst, n, **kwargs)
        byte = os.pread(dst, 1, n // 2)
        os.pwrite(dst, bytes([byte[0] ^ 0xFF]), n // 2)
        return copied

    monkeypatch.setattr(localcopy, "copy_fd", flipping_copy)
    source, sink = stores(tmp_path)
    write_files(tmp_path / "src" / "in", {"f.bin": size})

    result = copy(source, sink, options={"retries": 0})

    assert result.files[0].status == "failed"
    assert "checksum mismatch (staged bytes" in result.files[0].error
    assert not (tmp_path / "dst/out/f.bin").exists() and not list((tmp_path / "dst").rglob("*.*"))
