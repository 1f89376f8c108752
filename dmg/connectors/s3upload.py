"""Writing one S3 object: a single ``PutObject`` below the multipart threshold, else a
multipart upload whose parts are sent while the bytes arrive; a local file up to
``upload_cutoff`` goes in one ``PutObject`` streamed from the file, a larger one in parts
read from the file once each (:meth:`S3Writer.stage_file`). Nothing is visible before
:meth:`~dmg.connectors.base.StagedWriter.commit`.

No body's SHA-256 is computed for the signature (``UNSIGNED-PAYLOAD``,
:mod:`dmg.connectors.s3clients`): the checksum header below, which the signature covers,
is what S3 checks the body against. A completion retried after its answer was lost finds
the upload gone (S3: NoSuchUpload; moto 5.2.5: a 500); it counts as done only if the object
at the key has the composite CRC-32 (``md5``: the multipart ETag) and size of the parts.

Every request body carries a checksum that S3 checks on receipt (a bad body is
refused, not stored):

- a single PUT of bytes written: ``Content-MD5`` (S3 then keeps the object's MD5 as its
  ETag, which the engine compares with the MD5 of the source stream after commit);
- a single PUT of a local file (:class:`~dmg.connectors.capabilities.FileUpload`): the
  file's CRC-32 from a first pass over it, as ``x-amz-checksum-crc32`` (``Content-MD5``
  with ``part_checksum = "md5"``); the checksum S3 answers (its ETag for MD5) must equal
  it, else the object is deleted and :class:`~dmg.errors.Fatal` raised. The body is
  streamed from the file (:mod:`dmg.connectors.fileupload`), never buffered;
- a part, with ``part_checksum = "crc32"`` (the default): ``x-amz-checksum-crc32``, the
  upload created with ``ChecksumAlgorithm=CRC32``. At commit S3 answers (in the
  ``CompleteMultipartUpload`` reply, else a ``HeadObject`` with ``ChecksumMode``) the
  composite CRC-32 of the parts it stored; it must equal the composite of the CRC-32s
  computed here from the bytes read. A mismatch deletes the object and raises
  :class:`~dmg.errors.Fatal`. A server that keeps no checksum (answers none) leaves the
  object checked by its size only, with a warning naming ``part_checksum = "md5"``;
- a part, with ``part_checksum = "md5"``: ``Content-MD5``, and the ETag of the completed
  object must equal the MD5 of the parts' MD5s (the check made before issue 11).

CRC-32 costs a fifteenth of MD5's CPU per byte (ISA-L, :mod:`dmg.connectors.crc32`), and on
S3 (and moto) a composite checksum is computed per part, not over the whole object again.

Parts are sliced from the incoming chunks without copying a byte twice (the chunks
of a part are joined once), at most ``max_concurrency`` parts in flight.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import queue
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dmg.connectors._support import BoundedPool
from dmg.connectors.base import StagedWriter
from dmg.connectors.capabilities import FileUpload
from dmg.connectors.chunkbuffer import ChunkBuffer
from dmg.connectors.crc32 import crc32
from dmg.connectors.fileupload import CRC32_PREFIX, FileBody, checksum_pass
from dmg.connectors.s3errors import MULTIPART_ETAG, content_md5, map_s3_errors, multipart_etag
from dmg.errors import DmgError, Fatal, NotFound, Retryable

log = logging.getLogger(__name__)

PART_CHECKSUMS = ("crc32", "md5")


def crc32_b64(crc: int) -> str:
    """A CRC-32 as S3 writes it: the 4 big-endian bytes, base64."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def composite_crc32(part_crcs: Sequence[int]) -> str:
    """S3's composite checksum of a multipart object: CRC-32 of the parts' CRC-32s
    (big-endian bytes), base64 (S3 may append ``-<parts>``)."""
    return crc32_b64(crc32(b"".join(c.to_bytes(4, "big") for c in part_crcs)))


#: S3's limits on a multipart upload: parts per upload, and the smallest part but the last.
MAX_PARTS = 10_000
MIN_PART = 5 * 1024 * 1024


def part_size_for(size: int, part_size: int) -> int:
    """The part size for an object of ``size`` bytes: ``part_size``, or the next multiple
    of 1 MiB that keeps the parts within :data:`MAX_PARTS`; never under :data:`MIN_PART`."""
    mib = 1024 * 1024
    least = -(-size // MAX_PARTS)
    return max(part_size, MIN_PART, -(-least // mib) * mib)


def _read_into(source: Any, buffer: bytearray) -> int:
    """Fill ``buffer`` from a raw file; the bytes read (fewer only at its end)."""
    view = memoryview(buffer)
    got = 0
    while got < len(buffer) and (n := source.readinto(view[got:])):
        got += n
    return got


def _read_exactly(source: Any, n: int) -> bytes:
    """``n`` bytes from a raw file, fewer only at its end."""
    data = source.read(n)
    if data is None or len(data) >= n or not data:
        return data or b""
    pieces = [data]
    got = len(data)
    while got < n and (more := source.read(n - got)):
        pieces.append(more)
        got += len(more)
    return b"".join(pieces)


@dataclass(frozen=True)
class UploadShape:
    """How one object is uploaded (from the store's options)."""

    threshold: int
    part_size: int
    concurrency: int
    part_checksum: str = "crc32"
    #: A local file up to this size goes in one streamed ``PutObject`` (0: never).
    file_cutoff: int = 0


@dataclass(frozen=True)
class _Part:
    number: int
    etag: str
    crc32: int | None
    md5: str | None


@dataclass(frozen=True)
class _StagedFile:
    path: str
    size: int
    crc32: int
    md5: bytes | None  # with part_checksum = "md5": sent as Content-MD5


class S3Writer(StagedWriter, FileUpload):
    """Buffers up to the multipart threshold, then streams parts; or sends a local file in
    one PUT (:meth:`stage_file`); visible only on commit. :attr:`verified_by` names the
    check that verified the committed object."""

    def __init__(self, client: Any, bucket: str, key: str, *, shape: UploadShape, what: str) -> None:
        super().__init__(what)
        self._client, self._bucket, self._key, self._shape = client, bucket, key, shape
        self._buffer = ChunkBuffer()
        self._sent = 0
        self._upload_id: str | None = None
        self._pool: BoundedPool[_Part] | None = None
        self._part_number = 0
        self._file: _StagedFile | None = None
        self._from_file = False  # parts read from a local file (_stage_parts)
        self._part_size = shape.part_size
        #: ``content-md5`` (one PUT), ``put-crc32`` (one PUT of a file), ``composite-crc32``,
        #: ``multipart-md5`` or ``size``.
        self.verified_by = ""

    def takes_file(self, size: int) -> bool:
        """From the multipart threshold up (below it, bytes written go in one PUT anyway,
        buffered: as cheap for a small file, without opening it again): one PUT up to the
        cutoff, parts read from the file above it."""
        return (self._shape.threshold <= size and self._file is None and not self._from_file
                and self._upload_id is None and not self._buffer.held)

    def stage_file(self, source_file: str, *, size: int, on_step: Callable[[int], None]) -> tuple[str, str]:
        if size > self._shape.file_cutoff:
            return self._stage_parts(source_file, size=size, on_step=on_step)
        md5 = hashlib.md5(usedforsecurity=False) if self._shape.part_checksum == "md5" else None
        crc = 0

        def update(view: memoryview) -> None:
            nonlocal crc
            crc = crc32(view, crc)
            if md5 is not None:
                md5.update(view)

        checksum_pass(source_file, size=size, update=update, on_step=on_step, what=self.what)
        self._file = _StagedFile(source_file, size, crc, md5.digest() if md5 else None)
        if md5 is not None:
            return md5.hexdigest(), "content-md5"
        return f"{CRC32_PREFIX}{crc:08x}", "put-crc32"

    def _stage_parts(self, source_file: str, *, size: int, on_step: Callable[[int], None]) -> tuple[str, str]:
        """A file above the cutoff: a multipart upload whose parts are read from the file
        once each (one read, the part's checksum, the part sent as it is: no stream hash, no
        chunks joined), at most ``concurrency`` in flight while the next is read. Returns the
        file's CRC-32 (computed from the same bytes) and the check the commit makes."""
        self._from_file = True
        self._part_size = part_size_for(size, self._shape.part_size)
        # Full parts are read into buffers used again once their part is sent (at most
        # concurrency + 1 exist): a fresh 16 MiB bytes per part costs page faults (system CPU).
        free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        whole = 0
        done = 0
        with open(source_file, "rb", buffering=0) as source:
            while done < size:
                want = min(self._part_size, size - done)
                data: bytes | bytearray
                if want == self._part_size:
                    data = free.get_nowait() if not free.empty() else bytearray(want)
                    got = _read_into(source, data)
                else:
                    data = _read_exactly(source, want)
                    got = len(data)
                if got < want:
                    raise Fatal(f"{self.what}: the file has {done + got} bytes, the listing said {size}",
                                hint="the file changed while it was copied; run the activity again")
                whole = crc32(data, whole)
                self._send_part(data, release=free.put if isinstance(data, bytearray) else None)
                done += want
                on_step(want)
        check = "multipart-md5" if self._shape.part_checksum == "md5" else "composite-crc32"
        return f"{CRC32_PREFIX}{whole:08x}", check

    def _put_file(self, staged: _StagedFile) -> None:
        """One ``PutObject`` streamed from the file, its checksum in a header; the checksum
        S3 answers must be the same (a server that checks none is caught here too)."""
        check: dict[str, str]
        if staged.md5 is None:
            check = {"ChecksumAlgorithm": "CRC32", "ChecksumCRC32": crc32_b64(staged.crc32)}
        else:
            check = {"ContentMD5": base64.b64encode(staged.md5).decode()}
        with FileBody(staged.path, size=staged.size, crc32=staged.crc32, what=self.what) as body:
            try:
                with map_s3_errors(self.what):
                    reply = self._client.put_object(Bucket=self._bucket, Key=self._key, Body=body,
                                                    ContentLength=staged.size, **check)
            except DmgError:
                if body.error is not None:  # the file changed: not a connection problem
                    raise body.error from None
                raise
        if staged.md5 is None:
            got = str(reply.get("ChecksumCRC32") or "")
            if got:
                self._check("CRC-32", check["ChecksumCRC32"], got)
                self.verified_by = "put-crc32"
                return
            log.warning("S3 answered no CRC-32 for key=%s; checked by its ETag", self._key)
            md5 = hashlib.md5(usedforsecurity=False)
            checksum_pass(staged.path, size=staged.size, update=md5.update, on_step=lambda n: None,
                          what=self.what)
            self._check("ETag", md5.hexdigest(), str(reply.get("ETag", "")).strip('"').lower())
        else:
            self._check("ETag", (staged.md5 or b"").hex(), str(reply.get("ETag", "")).strip('"').lower())
        self.verified_by = "content-md5"

    def _write(self, chunk: bytes) -> None:
        if self._file is not None or self._from_file:
            raise Fatal(f"{self.what}: write after a file was staged")
        self._buffer.add(chunk)
        if self._upload_id is None and self._buffer.held < self._shape.threshold:
            return
        while self._buffer.held >= self._part_size:
            self._send_part(self._buffer.take(self._part_size))

    def _send_part(self, data: bytes | bytearray, *,
                   release: Callable[[bytearray], None] | None = None) -> None:
        """Upload ``data`` as the next part in the pool; ``release(data)`` once it is sent
        (or failed): the caller may then use the buffer again."""
        client, bucket, key = self._client, self._bucket, self._key
        crc = self._shape.part_checksum == "crc32"
        if self._upload_id is None:
            extra = {"ChecksumAlgorithm": "CRC32"} if crc else {}
            with map_s3_errors(self.what):
                reply = client.create_multipart_upload(Bucket=bucket, Key=key, **extra)
            self._upload_id = str(reply["UploadId"])
            self._pool = BoundedPool(self._shape.concurrency, name="dmg-s3-part")
        assert self._pool is not None
        self._part_number += 1
        self._sent += len(data)
        number, upload_id, what = self._part_number, self._upload_id, self.what

        def upload() -> _Part:
            try:
                return send()
            finally:
                if release is not None and isinstance(data, bytearray):
                    release(data)

        def send() -> _Part:
            if crc:
                part_crc = crc32(data)
                check: dict[str, str] = {"ChecksumCRC32": crc32_b64(part_crc)}
                md5 = None
            else:
                part_crc, check = 0, {"ContentMD5": content_md5(data)}
                md5 = base64.b64decode(check["ContentMD5"]).hex()
            with map_s3_errors(f"{what} (part {number})"):
                reply = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                                           PartNumber=number, Body=data, **check)
            return _Part(number, str(reply["ETag"]), part_crc if crc else None, md5)

        self._pool.submit(upload)

    def _commit(self, mtime: float | None) -> None:
        if self._file is not None:
            self._put_file(self._file)
        elif self._upload_id is None:
            body = self._buffer.take_all()
            with map_s3_errors(self.what):
                self._client.put_object(Bucket=self._bucket, Key=self._key, Body=body,
                                        ContentMD5=content_md5(body))
            self.verified_by = "content-md5"
        else:
            if self._buffer.held:
                self._send_part(self._buffer.take_all())
            assert self._pool is not None
            parts = sorted(self._pool.results(), key=lambda p: p.number)
            listed: list[dict[str, Any]] = []
            for part in parts:
                entry: dict[str, Any] = {"PartNumber": part.number, "ETag": part.etag}
                if part.crc32 is not None:
                    entry["ChecksumCRC32"] = crc32_b64(part.crc32)
                listed.append(entry)
            try:
                with map_s3_errors(self.what):
                    reply = self._client.complete_multipart_upload(
                        Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                        MultipartUpload={"Parts": listed})
            except (NotFound, Retryable) as exc:
                # botocore retries a completion whose answer was lost (a timeout, a dropped
                # connection); the retry finds the upload gone: S3 answers NoSuchUpload, moto
                # 5.2.5 a 500 (KeyError in complete_multipart_upload) when the retry lands while
                # the first is still storing the object. If the first one completed, the object
                # holds the parts sent: its checksum says so.
                done = self._completed_before(parts)
                if done is None:
                    if isinstance(exc, NotFound):
                        raise NotFound(f"{self.what}: the multipart upload is gone and the object "
                                       "at the key is not the one sent",
                                       hint="run the activity again") from exc
                    raise
                reply = done
            self._upload_id = None  # completed: nothing left to abort
            self._verify_completed(reply, parts)
        self._buffer.clear()

    def _completed_before(self, parts: Sequence[_Part]) -> dict[str, Any] | None:
        """The ``HeadObject`` of the key standing in for a completion answer that was lost, if
        the object there is the one these parts make: its composite CRC-32 (its multipart ETag
        with ``part_checksum = "md5"``) and its size; never the size alone, which an older
        object may share. None otherwise, or if the object cannot be read."""
        try:
            with map_s3_errors(self.what):
                head = self._client.head_object(Bucket=self._bucket, Key=self._key, ChecksumMode="ENABLED")
        except DmgError:
            return None
        if self._shape.part_checksum == "md5":
            etag = str(head.get("ETag", "")).strip('"').lower()
            ours = multipart_etag([p.md5 or "" for p in parts]) == etag
        else:
            got = str(head.get("ChecksumCRC32") or "").split("-")[0]
            ours = got == composite_crc32([p.crc32 or 0 for p in parts])
        if not ours or int(head.get("ContentLength", -1)) != self._sent:
            return None
        log.info("a retried completion found the upload done; the object is the one sent key=%s", self._key)
        return dict(head)

    def _verify_completed(self, reply: dict[str, Any], parts: Sequence[_Part]) -> None:
        """The object S3 assembled is the parts sent (see the module docstring); a mismatch
        deletes it."""
        if self._shape.part_checksum == "md5":
            expected = multipart_etag([p.md5 or "" for p in parts])
            got = str(reply.get("ETag", "")).strip('"').lower()
            if expected and MULTIPART_ETAG.match(got):
                self._check("ETag", expected, got)
                self.verified_by = "multipart-md5"
                return
        else:
            expected = composite_crc32([p.crc32 or 0 for p in parts])
            got = str(reply.get("ChecksumCRC32") or "")
            if not got:
                with map_s3_errors(self.what):
                    head = self._client.head_object(Bucket=self._bucket, Key=self._key,
                                                    ChecksumMode="ENABLED")
                got = str(head.get("ChecksumCRC32") or "")
            if got:
                self._check("composite CRC-32", expected, got.split("-")[0])
                self.verified_by = "composite-crc32"
                return
            log.warning("S3 kept no CRC-32 of the parts of key=%s; checked by size only "
                        "(store option part_checksum = \"md5\" checks the ETag instead)", self._key)
        with map_s3_errors(self.what):
            size = int(self._client.head_object(Bucket=self._bucket, Key=self._key)["ContentLength"])
        self._check("size", str(self._sent), str(size))
        self.verified_by = "size"

    def _check(self, what: str, expected: str, got: str) -> None:
        if expected == got:
            return
        log.error("S3 object does not match what was sent; deleting it key=%s check=%s", self._key, what)
        try:
            with map_s3_errors(self.what):
                self._client.delete_object(Bucket=self._bucket, Key=self._key)
        except DmgError as exc:
            log.warning("could not delete the mismatched object key=%s error=%s", self._key, exc)
        raise Fatal(f"{self.what}: S3 stored an object whose {what} is {got}, not {expected} as sent",
                    hint="a part was damaged or replaced in transit; run the activity again")

    def _abort(self) -> None:
        self._buffer.clear()
        self._file = None  # nothing was sent before commit
        if self._pool is not None:
            self._pool.cancel()
        if self._upload_id is not None:
            try:
                with map_s3_errors(self.what):
                    self._client.abort_multipart_upload(
                        Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
            except NotFound:
                pass
            except DmgError as exc:  # the lifecycle rule reclaims it; abort must not fail
                log.warning("could not abort multipart upload key=%s error=%s", self._key, exc)


__all__ = ["MAX_PARTS", "PART_CHECKSUMS", "S3Writer", "UploadShape", "composite_crc32", "crc32_b64",
           "part_size_for"]
