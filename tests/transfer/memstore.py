"""An in-memory store implementing dmg's connector contract, with faults on demand.

Like fsspec's ``MemoryFileSystem`` or dramatiq's stub broker: a real
implementation of our own interface, not a mock. Faults:

- ``read_faults``: errors raised by the next ``open_read`` calls, in order;
- ``corrupt_reads``: reads flip one byte (the listing keeps the true checksum);
- ``corrupt_writes``: staged bytes get one byte flipped (``staged_crc32`` tells);
- ``stat_faults``: errors raised by the next ``stat`` calls.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from dmg.connectors.base import Connector, Entry, StagedWriter, StoreSpec
from dmg.connectors.capabilities import KeepsMtime, NativeChecksum, RangedRead, StagedCrc32
from dmg.errors import DmgError, NotFound


class _MemoryWriter(StagedWriter, StagedCrc32):
    def __init__(self, store: MemoryConnector, path: str, staging_id: str) -> None:
        super().__init__(f"cannot write {path!r} in store 'mem'")
        self.store = store
        self.path = path
        self.staging_id = staging_id
        self.buffer = bytearray()
        store.staging[(path, staging_id)] = self.buffer

    def _write(self, chunk: bytes) -> None:
        if self.store.corrupt_writes and chunk:
            chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
        self.buffer += chunk

    def staged_crc32(self) -> int:
        return zlib.crc32(bytes(self.buffer))

    def _commit(self, mtime: float | None) -> None:
        self.store.put(self.path, bytes(self.buffer), mtime=mtime)
        self.store.commits.append(self.path)
        self._drop()

    def _abort(self) -> None:
        self._drop()

    def _drop(self) -> None:
        self.store.staging.pop((self.path, self.staging_id), None)


class MemoryConnector(Connector, NativeChecksum, KeepsMtime):
    type = "memory"

    def __init__(self, spec: StoreSpec | None = None) -> None:
        super().__init__(spec or StoreSpec("mem", "memory", "mem://"))
        self.objects: dict[str, tuple[bytes, float]] = {}
        self.staging: dict[tuple[str, str], bytearray] = {}
        self.commits: list[str] = []
        self.read_faults: list[DmgError] = []
        self.stat_faults: list[DmgError] = []
        self.reads = 0
        self.corrupt_reads = False
        self.corrupt_writes = False
        self._lock = threading.Lock()

    def put(self, path: str, data: bytes, *, mtime: float | None = None) -> None:
        with self._lock:
            self.objects[path] = (data, time.time() if mtime is None else mtime)

    def _entry(self, path: str) -> Entry:
        data, mtime = self.objects[path]
        return Entry(path, len(data), mtime, hashlib.md5(data, usedforsecurity=False).hexdigest())

    def list(self, prefix: str = "") -> Iterator[Entry]:
        base = prefix.strip("/")
        with self._lock:
            paths = sorted(p for p in self.objects if not base or p == base or p.startswith(base + "/"))
        if base and not paths:
            raise NotFound(f"{prefix} does not exist")
        for path in paths:
            yield self._entry(path)

    def stat(self, path: str) -> Entry:
        with self._lock:
            if self.stat_faults:
                raise self.stat_faults.pop(0)
            if path not in self.objects:
                raise NotFound(f"{path} does not exist")
            return self._entry(path)

    def open_read(self, path: str, *, offset: int = 0) -> BinaryIO:
        return self._read(path, offset, None)

    def _read(self, path: str, offset: int, length: int | None) -> BinaryIO:
        with self._lock:
            self.reads += 1
            if self.read_faults:
                raise self.read_faults.pop(0)
            if path not in self.objects:
                raise NotFound(f"{path} does not exist")
            data = self.objects[path][0]
        if self.corrupt_reads and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return io.BytesIO(data[offset:] if length is None else data[offset:offset + length])

    def open_write(self, path: str, *, staging_id: str) -> StagedWriter:
        return _MemoryWriter(self, path.strip("/"), staging_id)

    def delete(self, path: str) -> None:
        with self._lock:
            self.objects.pop(path, None)

    def check_reachable(self) -> None:
        return None


class RangedMemoryConnector(MemoryConnector, RangedRead):
    """The in-memory store that reads ranges: large objects come in parallel parts."""

    def open_range(self, path: str, *, offset: int, length: int) -> BinaryIO:
        return self._read(path, offset, length)
