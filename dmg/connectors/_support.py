"""Small pieces shared by the object and SQL connectors (no SDK imports here).

- :func:`clean_path` normalises a store-relative path and refuses escapes.
- :class:`ChunkStream` turns an iterator of byte chunks into a read-only binary
  stream, translating errors raised while iterating through a mapping context.
- :class:`BoundedPool` runs part uploads (or ranged downloads) on a few threads,
  with at most ``limit`` in flight, so memory stays bounded.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

from dmg.errors import PermissionDenied

T = TypeVar("T")


def clean_path(path: str, *, store: str) -> str:
    """``path`` as ``a/b/c`` (no leading or doubled ``/``); ``..`` raises ``PermissionDenied``."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PermissionDenied(
            f"path {path!r} is outside store {store!r}",
            hint="use a path relative to the store's location, without '..'",
        )
    return "/".join(parts)


class ChunkStream(io.RawIOBase):
    """A read-only stream over ``chunks``; ``skip`` leading bytes are dropped.

    Errors raised by the iterator pass through ``mapping()`` (a connector's
    error-mapping context manager), so readers only ever see :mod:`dmg.errors`.
    Closing the stream closes the iterator (releasing its connection).
    """

    def __init__(self, chunks: Iterator[bytes],
                 mapping: Callable[[], AbstractContextManager[None]], *, skip: int = 0,
                 on_close: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._chunks = chunks
        self._mapping = mapping
        self._skip = skip
        self._pending = memoryview(b"")
        self._on_close = on_close

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bool:
        while True:
            with self._mapping():
                chunk = next(self._chunks, None)
            if chunk is None:
                return False
            if self._skip:
                dropped = min(self._skip, len(chunk))
                chunk = chunk[dropped:]
                self._skip -= dropped
            if chunk:
                self._pending = memoryview(chunk)
                return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._pending and not self._next_chunk():
            return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            close = getattr(self._chunks, "close", None)
            try:
                if close is not None:
                    with self._mapping():
                        close()
                if self._on_close is not None:
                    with self._mapping():
                        self._on_close()
            finally:
                super().close()


def buffered(stream: ChunkStream, size: int = 1024 * 1024) -> io.BufferedReader:
    """A buffered reader over ``stream`` (what ``open_read`` hands out)."""
    return io.BufferedReader(stream, buffer_size=size)


class BoundedPool(Generic[T]):
    """Runs jobs on ``limit`` threads with at most ``limit`` unfinished at a time.

    :meth:`submit` blocks while ``limit`` jobs are in flight and re-raises the
    first failure; :meth:`results` waits for all and returns them in order.
    """

    def __init__(self, limit: int, *, name: str) -> None:
        self._limit = max(1, limit)
        self._executor = ThreadPoolExecutor(self._limit, thread_name_prefix=name)
        self._futures: list[Future[T]] = []
        self._pending: set[Future[T]] = set()

    def submit(self, job: Callable[[], T]) -> None:
        while len(self._pending) >= self._limit:
            _done, self._pending = wait(self._pending, return_when=FIRST_COMPLETED)
        for future in self._futures[-self._limit:]:
            if future.done():
                future.result()  # surface a failure now, not at commit
        future = self._executor.submit(job)
        self._futures.append(future)
        self._pending.add(future)

    def results(self) -> list[T]:
        try:
            return [f.result() for f in self._futures]
        finally:
            self.shutdown()

    def cancel(self) -> None:
        for future in self._futures:
            future.cancel()
        self.shutdown()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


def prefetch(jobs: Iterable[Callable[[], bytes]], *, limit: int, name: str) -> Iterator[bytes]:
    """Yield the results of ``jobs`` in order, running up to ``limit`` ahead in parallel."""
    executor = ThreadPoolExecutor(max(1, limit), thread_name_prefix=name)
    window: deque[Future[bytes]] = deque()
    try:
        for job in jobs:
            window.append(executor.submit(job))
            if len(window) >= limit:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        for future in window:
            future.cancel()
        executor.shutdown(wait=True)
