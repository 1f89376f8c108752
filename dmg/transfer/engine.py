"""The copy engine: a shard's files from one connector to another, any two.

For each entry (those the include/exclude filters keep), in a bounded pool of
``parallel_files`` threads:

1. **Decide** (:mod:`dmg.transfer.compare`) from the sink's entry — the planner's
   hint when it listed the sink, else a ``stat`` — whether to copy, skip, or
   hash the source first.
2. **Stream** the source into the sink's staging place: ranged parts in parallel
   for a large object of a store where that pays (:mod:`dmg.transfer.parts`),
   otherwise one stream with read-ahead. Memory is bounded by chunks in flight
   times chunk size; the throttle paces every chunk; the MD5 is computed as the
   bytes pass. When the sink's service can copy from the source itself
   (:class:`ServerSideCopy`: S3 to S3 on one endpoint with the same keys), the
   file is copied there in one request instead, fenced like a commit (checked
   just before) and checked by size and checksum afterwards.
3. **Verify** before commit (size, source checksum, staged bytes), **commit**
   only while ``may_commit()`` says the attempt is current, then verify against
   the sink (:mod:`dmg.transfer.checksums`). A mismatch never leaves a file
   committed.
4. **Retry** the file with backoff on :class:`~dmg.errors.Retryable` errors only
   (:mod:`dmg.transfer.retry`); any other error fails the file, not the shard.

``copy_entries`` raises :class:`~dmg.errors.StaleAttempt` as soon as a file finds
its attempt fenced off, and :class:`~dmg.errors.Cancelled` within about ``tick`` s
of ``stop_reason()`` saying why the shard must stop (its run was cancelled): the
files in flight are aborted between chunks (their staged writes too), nothing more
is committed, and what was committed stays. Callbacks (``on_file``, ``on_tick``) run in the caller's thread;
``on_bytes`` runs in copy threads and must be thread-safe. A shard of only small
files between two stores whose operations do not wait on a network
(:meth:`LocalFiles.operations_wait`: tmpfs, a local disk) runs its batches one after
the other in the caller's thread: no pool, as threads there overlap no latency and
cost their hand-offs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

from dmg.connectors.base import Connector, Entry, StagedWriter
from dmg.connectors.capabilities import FileUpload, KernelCopyIn, LocalFiles, NativeChecksum, ServerSideCopy
from dmg.errors import Cancelled, DmgError, Fatal, NotFound, Retryable, StaleAttempt
from dmg.site.fencing import SharedCheck
from dmg.transfer import checksums
from dmg.transfer.compare import COPY, HASH, SKIP, Decision, decide, keeps_mtime
from dmg.transfer.filters import PathFilter
from dmg.transfer.options import ALWAYS, VERIFY_OFF, VERIFY_REREAD, CopyOptions
from dmg.transfer.parts import ranged_chunks, ranged_reads, sequential_chunks
from dmg.transfer.paths import relative_path, sink_path_for
from dmg.transfer.report import COPIED, FAILED, SKIPPED, FileResult, ShardResult
from dmg.transfer.retry import call_with_retries
from dmg.transfer.throttle import Throttle

log = logging.getLogger(__name__)

_T = TypeVar("_T")

CHUNK_SIZE = 1024 * 1024
#: Files at least this large are read with a reader thread a few chunks ahead.
READ_AHEAD_FROM = 4 * CHUNK_SIZE
READ_AHEAD_CHUNKS = 4
#: Large files (ranged parts, read-ahead) copied at once per shard: bounds memory.
LARGE_FILES_AT_ONCE = 2
#: After commit, the sink's checksum is fetched (one ``stat``) for files at least
#: this large; smaller ones rely on the per-request MD5 the object stores check.
SINK_CHECK_FROM = CHUNK_SIZE

#: ``sink_hints`` value type: the sink's entry as the planner listed it (None: absent).
SinkHints = Mapping[str, Entry | None]


#: Files smaller than this are copied in batches: one thread, one fencing check per batch.
SMALL_FILE = CHUNK_SIZE
#: The most files and bytes in one batch.
BATCH_FILES = 64
BATCH_BYTES = 8 * CHUNK_SIZE
#: The most files in one batch copied inline (local small files, no pool): a batch costs a
#: fencing check (a Redis round trip) and its staged files stay open until it commits.
INLINE_BATCH_FILES = 256
#: Inline batches shrink toward the shard's end, down to this many files: the files of
#: the last batch are reported when it commits, so a small last batch keeps the shard's
#: final report (and the run's end) short.
TAIL_BATCH_FILES = 16
#: A batch's fencing check is trusted for this long; a later commit of it checks again.
CHECK_FRESH_FOR = 0.5
#: A batch commits what it staged once staging took this long (throttled, slow stores).
BATCH_SECONDS = 0.5


@dataclass
class Staged:
    """A file written to the sink's staging place and verified there, not yet committed."""

    writer: StagedWriter
    checksum: str  # MD5 hex, or ``xxh3:<hex>`` for a file copied by the kernel
    size: int
    verified: list[str]


@dataclass(frozen=True)
class BatchItem:
    position: int
    entry: Entry
    target: str
    hint: Entry | None
    hinted: bool


class _Cancelled(Exception):
    """A copy thread stopped because the shard is being abandoned."""


class _Moved:
    """The bytes a kernel copy or a checksum pass has reported so far: each step adds to the
    progress and stops the copy if the shard is being abandoned; ``undo`` takes them back."""

    def __init__(self, on_bytes: Callable[[int], None], cancel: threading.Event) -> None:
        self._on_bytes = on_bytes
        self._cancel = cancel
        self.total = 0

    def step(self, n: int) -> None:
        self.total += n
        self._on_bytes(n)
        if self._cancel.is_set():
            raise _Cancelled()

    def undo(self) -> None:
        self._on_bytes(-self.total)


def _noop_bytes(_n: int) -> None:
    return None


class CopyEngine:
    """Copies single files between ``source`` and ``sink``; shared by a shard's threads."""

    def __init__(self, source: Connector, sink: Connector, *, options: CopyOptions, throttle: Throttle,
                 staging_id: str, may_commit: Callable[[], bool],
                 on_bytes: Callable[[int], None] = _noop_bytes,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.source = source
        self.sink = sink
        self.options = options
        self.throttle = throttle
        self.staging_id = staging_id
        self.may_commit = SharedCheck(may_commit)
        self.on_bytes = on_bytes
        self.sleep = sleep
        self._cancel = threading.Event()
        self._large = threading.BoundedSemaphore(LARGE_FILES_AT_ONCE)
        self._sink_keeps_mtime = keeps_mtime(sink)
        self._ranged = ranged_reads(source)
        self._server_side = isinstance(sink, ServerSideCopy) and sink.can_copy_from(source)
        self._kernel = isinstance(source, LocalFiles) and isinstance(sink, LocalFiles)
        self._file_upload = isinstance(source, LocalFiles)

    @property
    def local(self) -> bool:
        """Both stores are files on this machine whose operations wait on no network."""
        return (self._kernel and isinstance(self.source, LocalFiles) and isinstance(self.sink, LocalFiles)
                and not self.source.operations_wait() and not self.sink.operations_wait())

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # -- one file -------------------------------------------------------------------------
    def copy_file(self, entry: Entry, target: str, *, hint: Entry | None = None,
                  hinted: bool = False) -> FileResult:
        """Copy (or skip) one entry to ``target``. Raises StaleAttempt, never other DmgErrors."""
        started = time.time()
        tries = 0

        def result(status: str, nbytes: int, checksum: str, error: str = "",
                   verified: str = "") -> FileResult:
            return FileResult(target, nbytes, checksum, status, error, source=entry.path,
                              verified=verified, tries=tries, started=started, ended=time.time())

        try:
            decision = self._decide(entry, target, hint=hint, hinted=hinted)
            if decision.action == SKIP:
                return result(SKIPPED, max(entry.size, 0), entry.checksum or "", decision.reason)

            def transfer(n: int) -> tuple[str, int, list[str]]:
                nonlocal tries
                tries = n
                return self._transfer(entry, target)

            (md5, size, verified), tries = call_with_retries(
                transfer, retries=self.options.retries, backoff=self.options.retry_backoff,
                what=f"copy of {entry.path}", sleep=self.sleep, stop=self._cancel.is_set)
        except (StaleAttempt, _Cancelled):
            raise
        except DmgError as exc:
            log.warning("copy failed path=%s tries=%d error=%s", entry.path, tries, exc)
            return result(FAILED, 0, "", str(exc))
        return result(COPIED, size, md5, verified=",".join(verified))

    def _decide(self, entry: Entry, target: str, *, hint: Entry | None, hinted: bool) -> Decision:
        if self.options.overwrite == ALWAYS:
            return Decision(COPY, "overwrite=always")
        sink_entry = hint if hinted else self._stat_sink(target)
        decision = decide(entry, sink_entry, self.options.overwrite, sink_keeps_mtime=self._sink_keeps_mtime)
        if decision.action != HASH:
            return decision
        assert sink_entry is not None and sink_entry.checksum
        md5, _size = self._retrying(lambda: checksums.md5_of(self.source, entry.path),
                                    what=f"checksum of {entry.path}")
        if md5 == sink_entry.checksum.lower():
            return Decision(SKIP, "same size and checksum")
        return Decision(COPY, "checksum differs")

    def _stat_sink(self, target: str) -> Entry | None:
        def stat() -> Entry | None:
            try:
                return self.sink.stat(target)
            except NotFound:
                return None

        return self._retrying(stat, what=f"stat of {target}")

    def _retrying(self, fn: Callable[[], _T], *, what: str) -> _T:
        value, _tries = call_with_retries(lambda _n: fn(), retries=self.options.retries,
                                          backoff=self.options.retry_backoff, what=what, sleep=self.sleep,
                                          stop=self._cancel.is_set)
        return value

    def _transfer(self, entry: Entry, target: str) -> tuple[str, int, list[str]]:
        """One try: stage, check, commit, verify again. -> (checksum, bytes, checks made)."""
        if self.server_side_for(entry) and isinstance(self.sink, ServerSideCopy):
            return self._copy_server_side(self.sink, entry, target)
        large = entry.size >= READ_AHEAD_FROM
        with self._large if large else contextlib.nullcontext():
            staged = self.stage(entry, target)
            try:
                if not self.may_commit():
                    raise StaleAttempt(f"{entry.path}: a newer attempt of this shard exists; not committed")
            except BaseException:
                self.drop(staged)
                raise
            return self.commit(entry, target, staged)

    def stage(self, entry: Entry, target: str) -> Staged:
        """Write ``entry`` to the sink's staging place under ``target`` and verify it there
        (size, source checksum, staged bytes); nothing is visible yet. On any error the
        staged bytes are aborted before it is raised."""
        writer = self.sink.open_write(target, staging_id=self.staging_id)
        if (self._kernel and entry.size >= 0 and isinstance(writer, KernelCopyIn)
                and self.throttle.limit() <= 0):
            return self._stage_in_kernel(entry, writer)
        if (self._file_upload and entry.size >= 0 and isinstance(writer, FileUpload)
                and writer.takes_file(entry.size) and self.throttle.limit() <= 0):
            return self._stage_file(entry, writer)
        large = entry.size >= READ_AHEAD_FROM
        sent = 0
        digest = checksums.StreamHash(threaded=large)
        try:
            with contextlib.closing(self._chunks(entry)) as chunks:
                for chunk in chunks:
                    if self._cancel.is_set():
                        raise _Cancelled()
                    self.throttle.take(len(chunk))
                    writer.write(chunk)
                    digest.update(chunk)
                    sent += len(chunk)
                    self.on_bytes(len(chunk))
            md5 = digest.hexdigest()
            verified = self._verify_staged(entry, writer, md5, digest.crc, sent)
        except BaseException:
            writer.abort()
            self.on_bytes(-sent)
            raise
        finally:
            digest.close()
        return Staged(writer, md5, sent, verified)

    def _stage_in_kernel(self, entry: Entry, writer: KernelCopyIn) -> Staged:
        """File to file: the kernel copies, XXH3 of the source file and of the staged file
        must be equal (:mod:`dmg.connectors.localcopy`)."""
        assert isinstance(self.source, LocalFiles) and isinstance(writer, StagedWriter)
        moved = _Moved(self.on_bytes, self._cancel)

        try:
            source = self.source.open_local(entry.path)
            try:
                source_hash, sent = writer.copy_in(source, size=entry.size, on_step=moved.step)
            finally:
                os.close(source)
            if sent != entry.size:
                raise Fatal(f"{entry.path}: read {sent} bytes, the listing said {entry.size}",
                            hint="the file changed while it was copied; run the activity again")
            verified = ["size"]
            if self.options.verify != VERIFY_OFF:
                checksums.check_equal("staged bytes", source_hash, writer.staged_xxh3(), path=entry.path)
                verified.append("xxh3")
        except BaseException:
            writer.abort()
            moved.undo()
            raise
        return Staged(writer, source_hash, sent, verified)

    def _stage_file(self, entry: Entry, writer: FileUpload) -> Staged:
        """A local file to an object store, one request at commit streamed from the file:
        the file is read once here for the checksum that request carries and the service
        checks (:mod:`dmg.connectors.fileupload`)."""
        assert isinstance(self.source, LocalFiles) and isinstance(writer, StagedWriter)
        moved = _Moved(self.on_bytes, self._cancel)

        try:
            checksum, check = writer.stage_file(self.source.local_file(entry.path), size=entry.size,
                                                on_step=moved.step)
        except BaseException:
            writer.abort()
            moved.undo()
            raise
        return Staged(writer, checksum, entry.size, ["size", check])

    def drop(self, staged: Staged) -> None:
        """Abort a staged file that will not be committed."""
        staged.writer.abort()
        self.on_bytes(-staged.size)

    def commit(self, entry: Entry, target: str, staged: Staged) -> tuple[str, int, list[str]]:
        """Commit a staged file (the caller checked ``may_commit()`` just before), then
        verify it against the sink. -> (checksum, bytes, checks made)."""
        try:
            staged.writer.commit(mtime=entry.mtime if entry.mtime > 0 else None)
        except BaseException:
            self.on_bytes(-staged.size)  # commit() aborted the staged bytes
            raise
        verified = staged.verified + self._verify_committed(target, staged.checksum, staged.size)
        return staged.checksum, staged.size, verified

    # -- a batch of small files -------------------------------------------------------------
    def copy_batch(self, batch: Sequence[BatchItem]) -> list[tuple[int, FileResult]]:
        """Copy small files in this thread: each is decided and staged (with retries), then
        ``may_commit()`` is asked **once** for the staged ones, right before they commit,
        and again before each further commit if more than :data:`CHECK_FRESH_FOR` s
        passed since (a process paused mid-batch checks again when it wakes). Staged
        files are committed at the end of the batch, or as soon as staging has taken
        :data:`BATCH_SECONDS` (a throttled or slow copy commits as it goes). A fenced
        attempt aborts every staged file and raises StaleAttempt: nothing of what was
        staged since the last check commits. -> (position, result) per item."""
        results: list[tuple[int, FileResult]] = []
        staged: list[tuple[BatchItem, Staged, float, int]] = []
        try:
            since = time.monotonic()
            for item in batch:
                if self._cancel.is_set():
                    raise _Cancelled()
                done = self._stage_item(item)
                if isinstance(done, FileResult):
                    results.append((item.position, done))
                else:
                    staged.append((item, *done))
                if staged and time.monotonic() - since > BATCH_SECONDS:
                    self._commit_staged(staged, results)
                    since = time.monotonic()
            self._commit_staged(staged, results)
        except BaseException:
            for _item, one, _started, _tries in staged:
                self.drop(one)
            raise
        return results

    def _commit_staged(self, staged: list[tuple[BatchItem, Staged, float, int]],
                       results: list[tuple[int, FileResult]]) -> None:
        """Check once, commit every staged file in order (emptying ``staged``); a check
        older than :data:`CHECK_FRESH_FOR` s is made again before the next commit."""
        checked = -math.inf
        while staged:
            item, one, started, tries = staged[0]
            if time.monotonic() - checked > CHECK_FRESH_FOR:
                if not self.may_commit():
                    raise StaleAttempt(f"{item.entry.path}: a newer attempt of this shard exists; "
                                       "not committed")
                checked = time.monotonic()
            staged.pop(0)
            results.append((item.position, self._commit_item(item, one, started, tries)))

    def _stage_item(self, item: BatchItem) -> FileResult | tuple[Staged, float, int]:
        entry, target = item.entry, item.target
        started = time.time()
        tries = 0

        def stage(n: int) -> Staged:
            nonlocal tries
            tries = n
            return self.stage(entry, target)

        try:
            decision = self._decide(entry, target, hint=item.hint, hinted=item.hinted)
            if decision.action == SKIP:
                return FileResult(target, max(entry.size, 0), entry.checksum or "", SKIPPED, decision.reason,
                                  source=entry.path, started=started, ended=time.time())
            staged, tries = call_with_retries(
                stage, retries=self.options.retries, backoff=self.options.retry_backoff,
                what=f"copy of {entry.path}", sleep=self.sleep, stop=self._cancel.is_set)
        except (StaleAttempt, _Cancelled):
            raise
        except DmgError as exc:
            log.warning("copy failed path=%s tries=%d error=%s", entry.path, tries, exc)
            return FileResult(target, 0, "", FAILED, str(exc), source=entry.path, tries=tries,
                              started=started, ended=time.time())
        return staged, started, tries

    def _commit_item(self, item: BatchItem, staged: Staged, started: float, tries: int) -> FileResult:
        entry, target = item.entry, item.target
        try:
            checksum, size, verified = self.commit(entry, target, staged)
        except DmgError as exc:
            if isinstance(exc, Retryable) and self.options.retries > 0:
                log.info("retrying copy of %s alone (commit failed: %s)", entry.path, exc)
                return self.copy_file(entry, target, hint=item.hint, hinted=item.hinted)
            log.warning("copy failed path=%s tries=%d error=%s", entry.path, tries, exc)
            return FileResult(target, 0, "", FAILED, str(exc), source=entry.path, tries=tries,
                              started=started, ended=time.time())
        return FileResult(target, size, checksum, COPIED, source=entry.path, verified=",".join(verified),
                          tries=tries, started=started, ended=time.time())

    def server_side_for(self, entry: Entry) -> bool:
        """Whether ``entry`` is copied inside the sink's service (one request, no staging)."""
        return (self._server_side and isinstance(self.sink, ServerSideCopy)
                and 0 <= entry.size <= self.sink.max_server_side_copy)

    def _copy_server_side(self, sink: ServerSideCopy, entry: Entry,
                          target: str) -> tuple[str, int, list[str]]:
        """One request inside the sink's service: fenced like a commit (checked just
        before), then the target's size and checksum against the source's."""
        if self._cancel.is_set():
            raise _Cancelled()
        if not self.may_commit():
            raise StaleAttempt(f"{entry.path}: a newer attempt of this shard exists; not copied")
        copied = sink.copy_from(self.source, entry.path, target)
        checks = ["server-side"]
        try:
            checksums.check_equal("copied size", str(entry.size), str(copied.size), path=target)
            checks.append("size")
            verify = self.options.verify
            if verify != VERIFY_OFF and entry.checksum and copied.checksum:
                checksums.check_equal("sink checksum", entry.checksum, copied.checksum, path=target)
                checks.append("sink-md5")
            if verify == VERIFY_REREAD:
                expected = entry.checksum or self._retrying(
                    lambda: checksums.md5_of(self.source, entry.path), what=f"checksum of {entry.path}")[0]
                checks.append(self._reread(target, expected))
        except checksums.ChecksumMismatch:
            self._delete_mismatch(target, "server-side copy")
            raise
        self.on_bytes(copied.size)
        return copied.checksum or entry.checksum or "", copied.size, checks

    def _chunks(self, entry: Entry) -> Generator[bytes, None, None]:
        opts = self.options
        if (self._ranged and opts.parallel_parts > 1 and entry.size >= 2 * opts.part_size
                and self.throttle.limit() <= 0):
            return ranged_chunks(self.source, entry.path, size=entry.size, part_size=opts.part_size,
                                 parallel=opts.parallel_parts, cancelled=self._cancel.is_set)
        ahead = READ_AHEAD_CHUNKS if entry.size >= READ_AHEAD_FROM else 0
        return sequential_chunks(self.source, entry.path, ahead=ahead,
                                 chunk_size=lambda: self.throttle.chunk_size(CHUNK_SIZE))

    def _verify_staged(self, entry: Entry, writer: StagedWriter, md5: str, crc: int, sent: int) -> list[str]:
        checks: list[str] = []
        if entry.size >= 0:
            if sent != entry.size:
                raise Fatal(f"{entry.path}: read {sent} bytes, the listing said {entry.size}",
                            hint="the file changed while it was copied; run the activity again")
            checks.append("size")
        if self.options.verify == VERIFY_OFF:
            return checks
        if entry.checksum:
            checksums.check_equal("source checksum", entry.checksum, md5, path=entry.path)
            checks.append("source-md5")
        staged_crc = checksums.staged_crc32(writer)
        if staged_crc is not None:
            checksums.check_equal("staged bytes", f"{crc:08x}", f"{staged_crc:08x}", path=entry.path)
            checks.append("staged-crc32")
            return checks
        return checks

    def _verify_committed(self, target: str, md5: str, sent: int) -> list[str]:
        verify = self.options.verify
        # Only an MD5 compares with a sink's native checksum (an xxh3:/crc32: one does not).
        native = isinstance(self.sink, NativeChecksum) and ":" not in md5
        if verify == VERIFY_OFF or not (verify == VERIFY_REREAD or (native and sent >= SINK_CHECK_FROM)):
            return []
        checks: list[str] = []
        try:
            stored = self._retrying(lambda: self.sink.stat(target), what=f"stat of {target}")
            if native and stored.checksum:
                checksums.check_equal("sink checksum", md5, stored.checksum, path=target)
                checks.append("sink-md5")
            if verify == VERIFY_REREAD and stored.size >= 0:  # size -1: rows, not bytes
                checks.append(self._reread(target, md5))
        except checksums.ChecksumMismatch:
            self._delete_mismatch(target, "committed file")
            raise
        return checks

    def _reread(self, target: str, expected: str) -> str:
        """Read ``target`` back from the sink and compare its checksum (MD5 or XXH3, as
        ``expected``); returns the check's name."""
        reread = self._retrying(lambda: checksums.same_kind_of(expected, self.sink, target),
                                what=f"re-read of {target}")
        checksums.check_equal("re-read", expected, reread, path=target)
        return "re-read"

    def _delete_mismatch(self, target: str, what: str) -> None:
        """A committed object that does not match is deleted, never left visible."""
        log.error("%s does not match; deleting it path=%s", what, target)
        with contextlib.suppress(DmgError):
            self.sink.delete(target)


# -- a shard ------------------------------------------------------------------------------
def copy_entries(
    source: Connector,
    sink: Connector,
    entries: Sequence[Entry],
    *,
    source_prefix: str,
    sink_prefix: str,
    staging_id: str,
    may_commit: Callable[[], bool] = lambda: True,
    on_file: Callable[[FileResult], None] | None = None,
    bandwidth: float = 0,
    options: CopyOptions | None = None,
    throttle: Throttle | None = None,
    sink_hints: SinkHints | None = None,
    on_bytes: Callable[[int], None] | None = None,
    on_tick: Callable[[], None] | None = None,
    tick: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    stop_reason: Callable[[], str] | None = None,
) -> ShardResult:
    """Copy every entry the filters keep; returns one :class:`FileResult` per entry, in order.

    ``options`` default to :class:`CopyOptions` (incremental ``if-different``),
    with ``bandwidth`` as the limit when no ``throttle`` is given. ``sink_hints``
    maps a source path to the sink's entry as listed at planning (``None``:
    absent); paths missing from it are looked up with ``stat``. ``on_file`` runs
    once per file as it finishes, ``on_tick`` about every ``tick`` s, both in this
    thread; ``on_bytes(n)`` as bytes move (negative when a failed try is undone).

    Raises :class:`StaleAttempt` (after aborting every file in hand) as soon as
    ``may_commit()`` turns false, :class:`Cancelled` once ``stop_reason()`` (asked
    about every ``tick`` s) returns a reason. Other :class:`DmgError` s fail a file, not the
    shard; the caller decides whether a failed file fails the shard.
    """
    opts = options or CopyOptions(bandwidth=int(bandwidth))
    engine = CopyEngine(source, sink, options=opts, throttle=throttle or Throttle.fixed(opts.bandwidth),
                        staging_id=staging_id, may_commit=may_commit, on_bytes=on_bytes or _noop_bytes,
                        sleep=sleep)
    keep = PathFilter(opts.include, opts.exclude)
    hints = sink_hints or {}
    kept = [e for e in entries if keep(relative_path(e.path, source_prefix=source_prefix))]
    inline = all(0 <= e.size < SMALL_FILE for e in kept) and engine.local
    work = _work_units(engine, kept, source_prefix=source_prefix, sink_prefix=sink_prefix, hints=hints,
                       parallel=1 if inline else opts.parallel_files,
                       batch_files=INLINE_BATCH_FILES if inline else BATCH_FILES)
    outcome = ShardResult(started=time.time())
    results: dict[int, FileResult] = {}
    pending: dict[Future[list[tuple[int, FileResult]]], int] = {}
    stale: StaleAttempt | None = None
    crash: BaseException | None = None
    stopped = ""
    next_stop_check = time.monotonic() + tick
    in_flight = 1 if inline else opts.parallel_files
    pool: ThreadPoolExecutor | _InlineExecutor = (_InlineExecutor() if inline else ThreadPoolExecutor(
        opts.parallel_files, thread_name_prefix="dmg-copy"))
    try:
        while True:
            while not engine.cancelled and len(pending) < in_flight:
                unit = next(work, None)
                if unit is None:
                    break
                pending[pool.submit(unit)] = 0
            if not pending:
                break
            done, _ = wait(pending, timeout=tick, return_when=FIRST_COMPLETED)
            for future in done:
                pending.pop(future)
                try:
                    finished = future.result()
                except StaleAttempt as exc:
                    stale = stale or exc
                    engine.cancel()
                except _Cancelled:
                    pass
                except BaseException as exc:  # a bug in a copy thread: stop the shard
                    crash = crash or exc
                    engine.cancel()
                else:
                    for position, result in finished:
                        results[position] = result
                        if on_file is not None:
                            on_file(result)
            if on_tick is not None:
                on_tick()
            if stop_reason is not None and not stopped and time.monotonic() >= next_stop_check:
                next_stop_check = time.monotonic() + tick
                stopped = stop_reason()
                if stopped:
                    engine.cancel()
    except BaseException:
        engine.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if crash is not None:
        raise crash
    if stale is not None:
        raise stale
    if stopped:
        raise Cancelled(stopped)
    outcome.files = [results[i] for i in sorted(results)]
    outcome.ended = time.time()
    return outcome


class _InlineExecutor:
    """Runs each unit in the calling thread as it is submitted (its future is done): for
    small files between stores that wait on no network, where threads overlap no latency
    and their hand-offs and the GIL are the whole cost. A batch of small files ends
    within moments, so ticks and cancel checks still come between units."""

    def submit(self, fn: Callable[[], _T]) -> Future[_T]:
        future: Future[_T] = Future()
        try:
            future.set_result(fn())
        except BaseException as exc:  # the caller's loop handles it as a thread's error
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None


def _work_units(engine: CopyEngine, entries: Sequence[Entry], *, source_prefix: str, sink_prefix: str,
                hints: SinkHints, parallel: int,
                batch_files: int = BATCH_FILES) -> Iterator[Callable[[], list[tuple[int, FileResult]]]]:
    """The shard's files as units of work for the pool, in order: a file of
    :data:`SMALL_FILE` bytes or more alone, runs of smaller ones as batches
    (:meth:`CopyEngine.copy_batch`) of at most ``batch_files`` files and
    :data:`BATCH_BYTES` bytes, smaller when there are few, so that every thread gets work.
    With one thread (``parallel`` 1), a batch holds at most half of the small files left,
    down to :data:`TAIL_BATCH_FILES`: the last results come in small batches."""
    small = sum(1 for e in entries if 0 <= e.size < SMALL_FILE)
    per_batch = max(1, min(batch_files, -(-small // max(1, parallel))))
    small_left = small
    batch: list[BatchItem] = []
    batch_bytes = 0
    for position, entry in enumerate(entries):
        item = BatchItem(position, entry,
                         sink_path_for(entry.path, source_prefix=source_prefix, sink_prefix=sink_prefix),
                         hints.get(entry.path), entry.path in hints)
        if 0 <= entry.size < SMALL_FILE and not engine.server_side_for(entry):
            if batch and (len(batch) >= per_batch or batch_bytes + entry.size > BATCH_BYTES):
                yield functools.partial(engine.copy_batch, batch)
                batch, batch_bytes = [], 0
            if not batch and parallel == 1:  # a new batch: at most half of what is left
                per_batch = min(batch_files, max(TAIL_BATCH_FILES, -(-small_left // 2)))
            small_left -= 1
            batch.append(item)
            batch_bytes += entry.size
            continue
        if batch:
            yield functools.partial(engine.copy_batch, batch)
            batch, batch_bytes = [], 0
        yield functools.partial(_copy_one, engine, item)
    if batch:
        yield functools.partial(engine.copy_batch, batch)


def _copy_one(engine: CopyEngine, item: BatchItem) -> list[tuple[int, FileResult]]:
    return [(item.position, engine.copy_file(item.entry, item.target, hint=item.hint, hinted=item.hinted))]
