"""Bytes held by an object-store writer until a part (S3) or block (Azure) is full.

Chunks are kept as they arrive and joined once when a part is cut (a chunk across the
cut is split), instead of appending to a ``bytearray`` and slicing it, which copied every
byte two or three times.
"""

from __future__ import annotations

import collections


class ChunkBuffer:
    """A FIFO of byte chunks with the count of bytes held."""

    def __init__(self) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self.held = 0

    def add(self, chunk: bytes | bytearray | memoryview) -> None:
        if chunk:
            self._chunks.append(chunk if isinstance(chunk, bytes) else bytes(chunk))
            self.held += len(chunk)

    def take(self, size: int) -> bytes:
        """The first ``size`` bytes held (at most :attr:`held`), removed from the buffer."""
        size = min(size, self.held)
        taken: list[bytes] = []
        need = size
        while need:
            chunk = self._chunks.popleft()
            if len(chunk) > need:
                taken.append(chunk[:need])
                self._chunks.appendleft(chunk[need:])
                need = 0
            else:
                taken.append(chunk)
                need -= len(chunk)
        self.held -= size
        return taken[0] if len(taken) == 1 else b"".join(taken)

    def take_all(self) -> bytes:
        return self.take(self.held)

    def clear(self) -> None:
        self._chunks.clear()
        self.held = 0
