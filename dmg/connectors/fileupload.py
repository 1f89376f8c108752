"""A local file sent in one request (S3 ``PutObject``, Azure ``Put Blob``), streamed from
the file, never held in memory, with a checksum the service checks.

A request that carries its checksum in a header needs it before the first byte of the
body, so the file is read twice: :func:`checksum_pass` reads it once for the checksum
(through one reusable buffer; the second read comes from the page cache), and
:class:`FileBody` is the request body the HTTP client streams from the file at commit.
If the file changes between the two reads the service refuses the body (its checksum
no longer matches); and :class:`FileBody` computes the CRC-32 of the bytes as it hands
them out and raises before handing out the last ones if it differs from the first
pass's, as it does for a file that ends early: the request then fails before its body is
complete, and nothing is stored even on a server that checks no checksum (moto 5.2.5
echoes ``x-amz-checksum-crc32`` without checking it). :class:`FileBody` is seekable, as
botocore and azure-core need it to be (botocore hashes a plain-http body for its
signature before sending it; both rewind to retry).

:func:`read_file_range` is the other way, for one part of a split object: the range read
once into one buffer with its CRC-32, then sent as it is (a part is at most a few tens of
MiB; the request needs its checksum before the body, and one read beats two).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dmg.connectors.crc32 import crc32
from dmg.errors import Fatal, NotFound

#: Bytes read per call in the checksum pass: the granularity of progress and cancel.
PASS_BUFFER = 1024 * 1024
#: A file's checksum when a CRC-32 verified it: ``crc32:<8 hex>`` (an MD5 has no prefix).
CRC32_PREFIX = "crc32:"


def checksum_pass(path: str, *, size: int, update: Callable[[memoryview], Any],
                  on_step: Callable[[int], None], what: str) -> None:
    """Feed the first ``size`` bytes of ``path`` to ``update`` (a hash's ``update``), calling
    ``on_step(n)`` as they pass (it may raise to stop); ``Fatal`` if the file is shorter."""
    buffer = bytearray(PASS_BUFFER)
    view = memoryview(buffer)
    done = 0
    with open(path, "rb", buffering=0) as source:
        while done < size:
            n = source.readinto(view[:min(PASS_BUFFER, size - done)])
            if not n:
                raise Fatal(f"{what}: the file has {done} bytes, the listing said {size}",
                            hint="the file changed while it was copied; run the activity again")
            update(view[:n])
            done += n
            on_step(n)


#: Bytes read per call into a part's buffer: the granularity of progress and cancel.
FILE_READ_BLOCK = 8 * 1024 * 1024


@dataclass(frozen=True)
class FileRange:
    """A range of a file read into one buffer, and its CRC-32."""

    buffer: bytearray
    crc32: int


def read_file_range(path: str, *, offset: int, length: int, on_step: Callable[[int], None],
                    what: str) -> FileRange:
    """``length`` bytes at ``offset`` of ``path``, read straight into one buffer in blocks of
    :data:`FILE_READ_BLOCK` (``preadv``: no intermediate bytes), the CRC-32 computed block by
    block; ``on_step(n)`` after each block (it may raise to stop). ``NotFound`` when the file
    is gone, ``Fatal`` when it has fewer bytes there."""
    buffer = bytearray(length)
    view = memoryview(buffer)
    crc = 0
    got = 0
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise NotFound(f"{what}: the source file {path} is gone",
                       hint="the file was removed while it was copied; run the activity again") from None
    except OSError as exc:
        raise Fatal(f"{what}: cannot read {path}: {exc.strerror}") from None
    try:
        while got < length:
            block = view[got:got + min(FILE_READ_BLOCK, length - got)]
            n = os.preadv(fd, [block], offset + got)
            if not n:
                raise Fatal(f"{what}: the file has {offset + got} bytes, at least {offset + length} expected",
                            hint="the file changed while it was copied; run the activity again")
            crc = crc32(block[:n], crc)
            got += n
            on_step(n)
    finally:
        os.close(fd)
    return FileRange(buffer, crc)


class FileBody(io.RawIOBase):
    """The first ``size`` bytes of a file as a request body: ``read``, ``seek``, ``tell``,
    ``len``; reading past ``size`` returns nothing. A file that ends before ``size``, or
    whose bytes read from the start do not have the CRC-32 ``crc32``, raises ``Fatal``
    before its last bytes are handed out (the request then fails before the body is
    complete)."""

    def __init__(self, path: str, *, size: int, crc32: int, what: str) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY)
        self._size = size
        self._pos = 0
        self._what = what
        self._expected = crc32
        self._crc = 0
        self._crc_to = 0  # the CRC-32 covers bytes [0, _crc_to); -1 after a jump
        #: The ``Fatal`` a read raised: HTTP clients wrap what a body raises while it is sent
        #: into a connection error (urllib3 2.8 under botocore 1.44), so the writer re-raises it.
        self.error: Fatal | None = None

    def __len__(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, min(self._size, base + offset))
        if self._pos == 0:
            self._crc, self._crc_to = 0, 0  # read again from the start (a hash, a retry)
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        try:
            return self._read(n)
        except Fatal as exc:
            self.error = exc
            raise

    def _read(self, n: int | None) -> bytes:
        left = self._size - self._pos
        want = left if n is None or n < 0 else min(n, left)
        if want <= 0:
            return b""
        data = os.pread(self._fd, want, self._pos)
        if not data:
            raise Fatal(f"{self._what}: the file ended at {self._pos} bytes, {self._size} expected",
                        hint="the file changed while it was copied; run the activity again")
        if self._crc_to == self._pos:
            self._crc = crc32(data, self._crc)
            self._crc_to += len(data)
            if self._crc_to == self._size and self._crc != self._expected:
                raise Fatal(f"{self._what}: the file's CRC-32 is {self._crc:08x} now, "
                            f"{self._expected:08x} when it was staged",
                            hint="the file changed while it was copied; run the activity again")
        elif self._pos != self._crc_to:
            self._crc_to = -1
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


__all__ = ["CRC32_PREFIX", "FILE_READ_BLOCK", "FileBody", "FileRange", "checksum_pass", "read_file_range"]
