"""Reading a source object as a stream of chunks, in order, with bounded memory.

- :func:`sequential_chunks`: one ``open_read`` stream, ``chunk_size()`` bytes at a
  time; for large objects a reader thread stays up to ``ahead`` chunks in front
  of the writer, so reading and writing overlap.
- :func:`ranged_chunks`: ``parallel`` ranged reads (``open_read(offset=...)``) of
  ``part_size`` bytes each, yielded in order; memory is at most
  ``(parallel + 1) * part_size``. Used for large objects of stores that read
  byte ranges cheaply (:func:`ranged_reads`).

Both stop early when ``cancelled()`` turns true and release every stream and
thread when the consumer stops iterating.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor

from dmg.connectors.base import Connector
from dmg.connectors.capabilities import RangedRead


def ranged_reads(connector: Connector) -> bool:
    """Whether reading parts of one object in parallel pays: a :class:`RangedRead`
    store (one request per range, an S3 ranged GET) that says so (not a local disk)."""
    return isinstance(connector, RangedRead) and connector.parallel_ranges


def sequential_chunks(source: Connector, path: str, *, chunk_size: Callable[[], int],
                      ahead: int = 0) -> Generator[bytes, None, None]:
    """The bytes of ``path`` in chunks; ``ahead`` > 0 reads in a thread that many chunks ahead."""
    if ahead <= 0:
        with source.open_read(path) as reader:
            while chunk := reader.read(chunk_size()):
                yield chunk
        return
    yield from _read_ahead(source, path, chunk_size=chunk_size, ahead=ahead)


_END = object()


def _read_ahead(source: Connector, path: str, *, chunk_size: Callable[[], int],
                ahead: int) -> Generator[bytes, None, None]:
    chunks: queue.Queue[object] = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            with source.open_read(path) as reader:
                while not stop.is_set():
                    chunk = reader.read(chunk_size())
                    if not chunk:
                        break
                    if not put(chunk):
                        return
            put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    thread = threading.Thread(target=pump, name="dmg-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = chunks.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item
    finally:
        stop.set()
        thread.join()


def _read_part(source: Connector, path: str, offset: int, length: int, chunk: int) -> list[bytes]:
    pieces: list[bytes] = []
    left = length
    assert isinstance(source, RangedRead)
    with source.open_range(path, offset=offset, length=length) as reader:
        while left > 0:
            data = reader.read(min(chunk, left))
            if not data:
                break
            pieces.append(data)
            left -= len(data)
    return pieces


def ranged_chunks(source: Connector, path: str, *, size: int, part_size: int, parallel: int,
                  cancelled: Callable[[], bool] = lambda: False,
                  read_chunk: int = 1024 * 1024) -> Generator[bytes, None, None]:
    """``size`` bytes of ``path`` as parts of ``part_size``, ``parallel`` fetched at once,
    yielded in pieces of at most ``read_chunk`` bytes.

    A part shorter than asked (the object shrank) ends the stream early; the
    caller's size check reports it.
    """
    offsets = iter(range(0, size, part_size))
    pool = ThreadPoolExecutor(max(1, parallel), thread_name_prefix="dmg-part")
    window: deque[tuple[int, Future[list[bytes]]]] = deque()

    def fill() -> None:
        while len(window) < parallel and not cancelled():
            offset = next(offsets, None)
            if offset is None:
                return
            length = min(part_size, size - offset)
            window.append((length, pool.submit(_read_part, source, path, offset, length, read_chunk)))

    try:
        fill()
        while window:
            length, future = window.popleft()
            pieces = future.result()
            fill()
            yield from pieces
            if sum(len(p) for p in pieces) < length:
                return
    finally:
        for _length, future in window:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
