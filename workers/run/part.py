"""Run one attempt of a *part shard*: one range of a very large object, and maybe its commit.

The planner split the object (:mod:`dispatcher.splitting`) and began the sink's
write; the shard's spec carries ``kind: "part"`` and ``part`` (object id, entry,
target, part number, parts total, offset, length, the sink's handle: a
:class:`dmg.shards.PartSpec`).
:class:`PartBody` is its body inside :func:`workers.run.attempt.run_attempt` (which
began the delivery and reported it running). One attempt:

1. Looks at the object's commit marker (:mod:`dmg.site.splits`): ``done`` —
   nothing left to do (succeeds); ``aborted`` — fails; held by a commit owner —
   every part is in already, so the part is not written again; the attempt takes
   the commit over only if the owner's attempt was replaced (it died mid-commit)
   or is an earlier execution of this very attempt.
2. Otherwise writes the part, retrying Retryable errors; idempotent either way (a
   re-run rewrites the same range with the same bytes):

   - **file → file** (a :class:`~dmg.connectors.capabilities.LocalFiles` source, a
     :class:`~dmg.connectors.capabilities.KernelRangeWrite` sink, no bandwidth
     limit): the kernel copies the range into the write at its offset
     (``copy_file_range``) while the source range is hashed with XXH3-128; the
     written range is read back and its XXH3 must be equal. The part's result
     carries ``xxh3`` (``xxh3:<hex>``);
   - **otherwise**: reads ``length`` bytes at ``offset`` from the source (one ranged
     read), paced by the activity run's bandwidth, MD5 as they pass, and writes
     them with the sink's ``write_range``; the sink's own MD5 of the stored part,
     when it gives one, must match. The part's result carries ``md5`` (what S3's
     Content-MD5 and Azure need).
3. Records the part's result for the current attempt only
   (:meth:`~dmg.site.splits.SplitObjects.record_part`); the part that completes
   the set owns the commit.
4. The owner commits (``commit_distributed``, idempotent) while its attempt is
   current, marks the object ``done``, and only then reports ``succeeded``: the
   activity run cannot succeed before the object is visible.

Counting: every part reports its own bytes; the object counts as one file, in
the report of the shard that committed it, with a per-file result whose checksum
is the S3-style hash of the parts' hashes (:func:`object_checksum`): ``<md5>-<parts>``
when every part has an MD5, ``xxh3:<xxh3>-<parts>`` when every part has an XXH3, and
whose ``verified`` says which hash verified the parts (``size,part-md5`` or
``size,part-xxh3``). A part that fails for good marks the object ``aborted`` and aborts the
sink's write (once); the other parts then stop. A part of a cancelled run
(:meth:`dmg.site.state.SiteState.is_cancelled`, looked at with the abandon check)
stops and aborts the write the same way.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from dmg.attempt_ends import CANCELLED_REASON
from dmg.connectors import Connector, StoreSpec
from dmg.connectors.capabilities import FileRangeWrite, KernelRangeWrite, LocalFiles, RangedRead
from dmg.connectors.distributed import DistributedWrite, distributed_writer
from dmg.errors import Cancelled, DmgError, Fatal, StaleAttempt
from dmg.shards import PartSpec, ShardSpec
from dmg.site.splits import ABORTED, COMMIT, DONE, STALE, SplitObjects, owner_token
from dmg.site.state import SiteState
from dmg.transfer import COPIED, CopyOptions, FileResult, Throttle, checksums
from dmg.transfer.retry import call_with_retries
from dmg.transfer.sitebandwidth import SiteBandwidth
from workers.run.attempt import Attempt, Done

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
#: A part in flight looks every this many chunks whether the object was abandoned (stops early).
ABANDON_CHECK_EVERY = 4


@dataclass
class PartOutcome:
    """What :func:`run_part` did: ``ok`` or ``error``; ``committed`` when it made the object visible."""

    ok: bool
    bytes: int = 0
    committed: bool = False
    error: str = ""
    file_result: FileResult | None = None


def composite_md5(parts: list[dict[str, Any]]) -> str:
    """``<md5 of the parts' binary MD5s>-<count>``; "" when a part's MD5 is unknown."""
    md5s = [str(p.get("md5", "")) for p in parts]
    if not md5s or any(len(m) != 32 for m in md5s):
        return ""
    joined = b"".join(bytes.fromhex(m) for m in md5s)
    return f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(md5s)}"


def composite_crc32(parts: list[dict[str, Any]]) -> str:
    """``crc32:<CRC-32 of the parts' CRC-32s, hex>-<count>`` (S3's composite checksum, which
    it shows in base64); "" when a part's CRC-32 is unknown."""
    crcs = [str(p.get("crc32", "")) for p in parts]
    if not crcs or not all(crcs):
        return ""
    joined = b"".join(base64.b64decode(c) for c in crcs)
    return f"crc32:{zlib.crc32(joined):08x}-{len(crcs)}"


def _verified_kinds(parts: list[dict[str, Any]]) -> list[str]:
    """The hashes that verified the parts: what each part says (``verified``), or, for a
    part recorded before parts said it, the hashes it carries."""
    kinds: list[str] = []
    for p in parts:
        said = str(p.get("verified", ""))
        found = [said.removeprefix("part-")] if said else [k for k in ("md5", "xxh3") if p.get(k)]
        kinds += [k for k in found if k not in kinds]
    return kinds


def object_checksum(parts: list[dict[str, Any]]) -> tuple[str, str]:
    """(checksum, verified) of a committed object from its parts' results: the composite of
    the hash that verified the parts (MD5: what S3 shows as the ETag; CRC-32: S3's composite
    checksum; XXH3), and which hashes verified them (``size,part-md5`` / ``size,part-crc32``
    / ``size,part-xxh3``; each when they differ)."""
    kinds = _verified_kinds(parts)
    composites = {"md5": composite_md5, "crc32": composite_crc32, "xxh3": checksums.composite_xxh3}
    checksum = next((c for kind in kinds if (c := composites[kind](parts))), "")
    return checksum, ",".join(["size", *(f"part-{kind}" for kind in kinds)])


def run_part(
    shard_id: str,
    attempt: int,
    *,
    spec: ShardSpec,
    state: SiteState,
    connector_factory: Callable[[StoreSpec], Connector],
    sleep: Callable[[float], None] = time.sleep,
) -> PartOutcome:
    """Run the part shard ``shard_id`` (see the module docstring). Raises StaleAttempt when
    the attempt is fenced off; other errors end in a failed :class:`PartOutcome`."""
    if spec.part is None:
        raise Fatal(f"shard {shard_id} is not a part shard", hint="a bug in dmg: report it")
    part = spec.part
    options = CopyOptions.from_json(spec.options)
    objects = SplitObjects(state)
    connectors: list[Connector] = []
    writer: DistributedWrite | None = None
    try:
        source = connector_factory(spec.source_store)
        connectors.append(source)
        sink = connector_factory(spec.sink_store)
        connectors.append(sink)
        writer = distributed_writer(sink)
        if writer is None:
            raise Fatal(f"store {sink.spec.name!r} cannot take parts from several nodes",
                        hint="this node runs an older dmg; upgrade it")
        active: DistributedWrite = writer
        marker = objects.marker(part.object)
        if marker == DONE:
            return PartOutcome(True, part.length)
        if marker == ABORTED:
            return PartOutcome(False, error=f"{part.target}: the write was abandoned (another part failed)")
        if marker is not None:  # every part is in; maybe the commit is ours to finish
            mine = owner_token(shard_id, attempt)
            if (marker == mine or objects.owner_gone(marker)) and objects.take_over(
                    part.object, marker, shard_id, attempt):
                log.info("commit taken over object=%s from=%s shard=%s attempt=%d",
                         part.object, marker, shard_id, attempt)
                return _commit(part, writer, objects, state, shard_id, attempt)
            return PartOutcome(True, part.length)
        throttle = Throttle(SiteBandwidth(state, spec.activity_run_id or shard_id,
                                          default=options.bandwidth))

        def abandoned() -> bool:
            if state.is_cancelled(spec.activity_run_id):
                raise Cancelled(CANCELLED_REASON)  # aborts the write below, like a failed part
            return objects.marker(part.object) == ABORTED

        def upload(_try: int) -> dict[str, Any]:
            if isinstance(source, LocalFiles) and throttle.limit() <= 0:
                if isinstance(active, KernelRangeWrite):
                    return _copy_part_in_kernel(source, active, part, throttle, abandoned=abandoned)
                if isinstance(active, FileRangeWrite):
                    return _send_part_from_file(source, active, part, throttle, abandoned=abandoned)
            return _write_part(source, active, part, throttle, abandoned=abandoned)

        result, _tries = call_with_retries(upload, retries=options.retries, backoff=options.retry_backoff,
                                           what=f"part {part.part_number} of {part.entry.path}", sleep=sleep)
        recorded = objects.record_part(part.object, shard_id, attempt, result, parts_total=part.parts_total)
        if recorded == STALE:
            raise StaleAttempt(f"{part.target} part {part.part_number}: a newer attempt of this shard exists")
        if recorded == ABORTED:
            return PartOutcome(False, error=f"{part.target}: the write was abandoned (another part failed)")
        if recorded == COMMIT:
            return _commit(part, writer, objects, state, shard_id, attempt)
        return PartOutcome(True, part.length)
    except StaleAttempt:
        raise
    except DmgError as exc:
        if writer is not None and objects.mark_aborted(part.object):
            log.warning("distributed write aborted object=%s path=%s error=%s", part.object, part.target, exc)
            try:
                writer.abort_distributed(part.target, part.handle)
            except DmgError as abort_error:
                log.warning("could not abort the distributed write path=%s error=%s",
                            part.target, abort_error)
        return PartOutcome(False, error=f"{part.target} part {part.part_number}: {exc}")
    finally:
        for connector in connectors:
            connector.close()


class PartBody:
    """The body of a part shard inside :func:`workers.run.attempt.run_attempt`: :func:`run_part`,
    counted as the module docstring says. It writes into the sink's distributed write, not
    under staging ids, so it has no staging leftovers to clean (``stages`` False)."""

    stages = False

    def __init__(self, spec: ShardSpec, run: Attempt) -> None:
        self.spec = spec
        self.attempt = run
        self.length = spec.part.length if spec.part is not None else 0

    def running_totals(self) -> tuple[int, int]:
        return 0, self.length

    def so_far(self) -> Done:
        return Done(False, 0, 0, (0, self.length))

    def run(self) -> Done:
        run = self.attempt
        outcome = run_part(run.shard_id, run.attempt, spec=self.spec, state=run.state,
                           connector_factory=run.connector_factory)
        files = int(outcome.committed)
        results = None
        if outcome.file_result is not None:
            results = [{**outcome.file_result.to_json(), "node": run.node, "attempt": run.attempt}]
        return Done(outcome.ok, files, outcome.bytes if outcome.ok else 0, (files, self.length),
                    outcome.error, file_results=results)


def _ranged(source: Connector, path: str, offset: int, length: int) -> Iterator[bytes]:
    reader_of = (source.open_range(path, offset=offset, length=length) if isinstance(source, RangedRead)
                 else source.open_read(path, offset=offset))
    with reader_of as reader:
        left = length
        while left > 0:
            data = reader.read(min(CHUNK, left))
            if not data:
                return
            left -= len(data)
            yield data


def _write_part(source: Connector, writer: DistributedWrite, part: PartSpec, throttle: Throttle, *,
                abandoned: Callable[[], bool]) -> dict[str, Any]:
    digest = hashlib.md5(usedforsecurity=False)
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for index, chunk in enumerate(_ranged(source, part.entry.path, part.offset, part.length)):
            if index % ABANDON_CHECK_EVERY == ABANDON_CHECK_EVERY - 1 and abandoned():
                raise Fatal(f"{part.target}: the write was abandoned (another part failed)")
            throttle.take(len(chunk))
            digest.update(chunk)
            sent += len(chunk)
            yield chunk

    result = dict(writer.write_range(part.target, part.handle, part_number=part.part_number,
                                     offset=part.offset, chunks=chunks(), length=part.length))
    if sent != part.length:
        raise Fatal(f"{part.entry.path}: read {sent} bytes of part {part.part_number}, "
                    f"expected {part.length}",
                    hint="the file changed while it was copied; run the activity again")
    md5 = digest.hexdigest()
    if result.get("md5"):
        checksums.check_equal(f"part {part.part_number}", md5, str(result["md5"]), path=part.target)
    result["md5"] = md5
    result["part_number"] = part.part_number
    result["verified"] = "part-md5"
    return result


def _send_part_from_file(source: LocalFiles, writer: FileRangeWrite, part: PartSpec, throttle: Throttle,
                         *, abandoned: Callable[[], bool]) -> dict[str, Any]:
    """A local file to a store that checks each part (S3): the range read once in large
    blocks into the request's body, sent with the checksum the store checks on receipt
    (its CRC-32); no MD5 of the node's own, which nothing would read."""
    steps = 0

    def step(n: int) -> None:
        nonlocal steps
        throttle.take(n)  # no limit here: records the bytes, never waits
        steps += 1
        if abandoned():
            raise Fatal(f"{part.target}: the write was abandoned (another part failed)")

    result = dict(writer.send_file_range(part.target, part.handle, part_number=part.part_number,
                                         offset=part.offset, length=part.length,
                                         source_file=source.local_file(part.entry.path), on_step=step))
    checked = "crc32" if result.get("crc32") else "md5" if result.get("md5") else ""
    if not checked:
        raise Fatal(f"{part.target}: the store gave no checksum of part {part.part_number}",
                    hint="a bug in dmg: report it")
    result["part_number"] = part.part_number
    result["verified"] = f"part-{checked}"
    return result


def _copy_part_in_kernel(source: LocalFiles, writer: KernelRangeWrite, part: PartSpec, throttle: Throttle,
                         *, abandoned: Callable[[], bool]) -> dict[str, Any]:
    """File to file: the kernel copies the range, the XXH3 of the source range and of the
    written range must be equal (a mismatch raises ChecksumMismatch, which is not retried)."""

    def step(n: int) -> None:
        throttle.take(n)  # no limit here: records the bytes, never waits
        if abandoned():
            raise Fatal(f"{part.target}: the write was abandoned (another part failed)")

    source_hash = writer.copy_range_in(part.target, part.handle, part_number=part.part_number,
                                       offset=part.offset, length=part.length,
                                       source_file=source.local_file(part.entry.path), on_step=step)
    written = writer.range_xxh3(part.target, part.handle, offset=part.offset, length=part.length)
    checksums.check_equal(f"part {part.part_number}", source_hash, written, path=part.target)
    return {"part_number": part.part_number, "xxh3": source_hash, "verified": "part-xxh3"}


def _commit(part: PartSpec, writer: DistributedWrite, objects: SplitObjects, state: SiteState,
            shard_id: str, attempt: int) -> PartOutcome:
    started = time.time()
    parts = objects.parts(part.object)
    if len(parts) != part.parts_total:
        raise Fatal(f"{part.target}: {len(parts)} of {part.parts_total} parts are recorded; cannot commit",
                    hint="run the activity again")
    if not state.is_current(shard_id, attempt):
        raise StaleAttempt(f"{part.target}: a newer attempt of this shard exists; not committed")
    writer.commit_distributed(part.target, part.handle, parts, size=part.entry.size)
    objects.mark_done(part.object)
    log.info("split object committed object=%s path=%s parts=%d shard=%s attempt=%d",
             part.object, part.target, len(parts), shard_id, attempt)
    checksum, verified = object_checksum(parts)
    result = FileResult(part.target, part.entry.size, checksum, COPIED, source=part.entry.path,
                        verified=verified, tries=1, started=started, ended=time.time())
    return PartOutcome(True, part.length, committed=True, file_result=result)
