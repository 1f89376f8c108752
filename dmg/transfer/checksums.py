"""Checksums: MD5 computed while streaming (XXH3 for file → file), and the checks made against it.

Before a file is committed (a mismatch aborts it: nothing becomes visible):

- the streamed size against the listed size (when known, i.e. not ``-1``);
- the streamed MD5 against the source's native checksum (``Entry.checksum``:
  an S3 ETag that is an MD5, an Azure Content-MD5);
- the stream against the bytes the sink staged, for writers that can re-read
  their staging cheaply: a writer that is a
  :class:`~dmg.connectors.capabilities.StagedCrc32` (the ``file`` store re-reads
  its staging file; CRC-32 keeps that pass cheap).

After commit (``verify=auto``): the sink's native checksum, for sinks that are
``NativeChecksum`` whose entry carries one (S3 single-part uploads, Azure blobs);
``verify=re-read`` also re-reads the committed object. A mismatch found after
commit deletes the object and fails the file. S3 (``Content-MD5`` on every
part) and Azure (``validate_content`` on every block) check each request body
before anything is committed, so that path catches only a sink's own bug.

File to file (both stores :class:`~dmg.connectors.capabilities.LocalFiles`, no
bandwidth limit): the kernel copies the bytes (``copy_file_range``) and the XXH3-128
of the source file is compared with the XXH3-128 of the staged file before commit
(:mod:`dmg.connectors.localcopy`): every byte is still checked end to end, at a
tenth of MD5's CPU. The file's ``checksum`` is then ``xxh3:<hex>``; for a local file sent
to an object store in one request (:class:`~dmg.connectors.capabilities.FileUpload`) it
is ``crc32:<hex>`` (S3, checked by the service: ``put-crc32``) or the MD5 (Azure's
``Content-MD5``, ``content-md5``); otherwise it is
the MD5 hex (what S3's Content-MD5 and Azure need), so a report tells by the prefix
which hash verified each file. A part of a split object copied file → file is checked
the same way on its range (:mod:`workers.run.part`); the object's checksum is then
:func:`composite_xxh3` of its parts'.

What was checked is recorded per file (``FileResult.verified``): ``size``,
``source-md5``, ``staged-crc32``, ``xxh3`` (source file = staged file), ``sink-md5``,
``re-read``, ``server-side`` (copied inside the sink's service,
:class:`~dmg.connectors.capabilities.ServerSideCopy`).

:class:`StreamHash` computes the MD5 (and a CRC-32) as bytes pass; for large
files the MD5 runs in a thread of its own, overlapping the reads and writes.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import xxhash

from dmg.connectors.base import Connector, StagedWriter
from dmg.connectors.capabilities import StagedCrc32
from dmg.connectors.fileupload import CRC32_PREFIX
from dmg.connectors.localcopy import XXH3_PREFIX
from dmg.errors import Fatal

CHUNK = 1024 * 1024


class ChecksumMismatch(Fatal):
    """The bytes copied are not the bytes expected; the file was not committed."""


def new_md5() -> Any:
    return hashlib.md5(usedforsecurity=False)


class StreamHash:
    """MD5 (hex) and CRC-32 of a stream. ``threaded``: the MD5 is computed in a thread
    of its own, at most ``depth`` chunks behind; :meth:`close` stops it (idempotent)."""

    _END = object()

    def __init__(self, *, threaded: bool = False, depth: int = 8) -> None:
        self._md5 = new_md5()
        self.crc = 0
        self._queue: queue.Queue[object] | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._queue = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._run, name="dmg-md5", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        assert self._queue is not None
        while (chunk := self._queue.get()) is not self._END:
            self._md5.update(chunk)

    def update(self, chunk: bytes) -> None:
        self.crc = zlib.crc32(chunk, self.crc)
        if self._queue is not None:
            self._queue.put(chunk)
        else:
            self._md5.update(chunk)

    def close(self) -> None:
        if self._thread is not None and self._queue is not None:
            self._queue.put(self._END)
            self._thread.join()
            self._thread = None

    def hexdigest(self) -> str:
        """The MD5 of everything passed to :meth:`update` (waits for the thread)."""
        self.close()
        return str(self._md5.hexdigest())


def staged_crc32(writer: StagedWriter) -> int | None:
    """The CRC-32 the sink's writer reports for its staged bytes, or None if it cannot tell."""
    return writer.staged_crc32() if isinstance(writer, StagedCrc32) else None


def md5_of(connector: Connector, path: str) -> tuple[str, int]:
    """(MD5 hex, size) of ``path`` read back from ``connector``."""
    digest = new_md5()
    size = 0
    with connector.open_read(path) as reader:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def xxh3_of(connector: Connector, path: str) -> tuple[str, int]:
    """(``xxh3:<hex>``, size) of ``path`` read back from ``connector``."""
    digest = xxhash.xxh3_128()
    size = 0
    with connector.open_read(path) as reader:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return XXH3_PREFIX + digest.hexdigest(), size


def crc32_of(connector: Connector, path: str) -> str:
    """``crc32:<hex>`` of ``path`` read back from ``connector``."""
    crc = 0
    with connector.open_read(path) as reader:
        while chunk := reader.read(CHUNK):
            crc = zlib.crc32(chunk, crc)
    return f"{CRC32_PREFIX}{crc:08x}"


def same_kind_of(expected: str, connector: Connector, path: str) -> str:
    """The checksum of ``path`` read back, of the kind of ``expected`` (``xxh3:…``,
    ``crc32:…`` or MD5)."""
    if expected.startswith(XXH3_PREFIX):
        return xxh3_of(connector, path)[0]
    if expected.startswith(CRC32_PREFIX):
        return crc32_of(connector, path)
    return md5_of(connector, path)[0]


def composite_xxh3(parts: Sequence[Mapping[str, Any]]) -> str:
    """A split object's XXH3, S3-style: ``xxh3:<XXH3-128 of the parts' binary XXH3s>-<count>``
    from the parts' ``xxh3`` (``xxh3:<hex>``); "" when a part's XXH3 is unknown."""
    hashes = [str(p.get("xxh3", "")).removeprefix(XXH3_PREFIX) for p in parts]
    if not hashes or any(len(h) != 32 for h in hashes):
        return ""
    joined = b"".join(bytes.fromhex(h) for h in hashes)
    return f"{XXH3_PREFIX}{xxhash.xxh3_128_hexdigest(joined)}-{len(hashes)}"


def check_equal(what: str, expected: str, actual: str, *, path: str) -> None:
    """Raise :class:`ChecksumMismatch` when two MD5s differ (case-insensitive)."""
    if expected.lower() != actual.lower():
        raise ChecksumMismatch(f"{path}: checksum mismatch ({what}: expected {expected}, got {actual})",
                               hint="the file was not committed; check the source and network, then re-run")
