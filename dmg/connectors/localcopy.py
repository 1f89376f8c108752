"""Local file to local file: the kernel copies, XXH3 checks both sides.

:func:`copy_fd` moves the bytes with ``os.copy_file_range`` (no copy through user
space; a filesystem that can shares or reflinks the blocks), falls back to
``os.sendfile`` where the kernel refuses it (``EXDEV`` before Linux 5.3,
``ENOSYS``, ``EINVAL`` on some filesystems), and to ``read``/``write`` last.
:func:`copy_range` does the same for one byte range, at the same offset on both sides
(a part of a split object written into the shared staging file).

:func:`xxh3_of_fd` is the XXH3-128 (hex) of a file read with ``pread`` through one
reusable buffer: memory stays at :data:`HASH_BUFFER` bytes whatever the file's size
(a ``mmap`` would map the whole file into the process's RSS). XXH3 is not a
cryptographic hash; it guards against corruption and races, which is what a copy's
verification needs, at ~10 times the speed of MD5.

:func:`xxh3_of_own_range` hashes a file that only this attempt writes (its staging file)
through ``mmap`` windows of :data:`MAP_WINDOW` bytes: no copy of the page cache into a
buffer, half the CPU of a ``pread`` hash on this machine (0.1 against 0.2 CPU-s per GiB),
and at most one window mapped at a time. A *source* file is never mapped: anyone may
truncate it while it is read, and a mapped read past a file's end is a SIGBUS that kills
the process, where ``pread`` just returns fewer bytes.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Callable

import xxhash

#: Bytes handed to the kernel per call: the granularity of progress and cancel.
COPY_STEP = 64 * 1024 * 1024
HASH_BUFFER = 1024 * 1024
#: Bytes of an own file mapped at once by :func:`xxh3_of_own_range` (a multiple of the
#: allocation granularity); ranges up to :data:`HASH_BUFFER` are read with one ``pread``.
MAP_WINDOW = 16 * 1024 * 1024
#: Files at least this large have their source hashed in a thread beside the copy.
THREADED_HASH_FROM = 8 * 1024 * 1024
#: errnos after which ``copy_file_range`` / ``sendfile`` are given up for this copy.
_UNSUPPORTED = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}

XXH3_PREFIX = "xxh3:"


def _kernel_loop(call: Callable[[int, int], int], size: int, done: int,
                 on_step: Callable[[int], None]) -> int:
    while done < size:
        n = call(done, min(COPY_STEP, size - done))
        if n == 0:
            break  # the source is shorter than it was: the caller's size check fails
        done += n
        on_step(n)
    return done


def _restart(dst: int) -> None:
    # Only after a method failed: on ext4 a truncate to 0 makes close() start the file's
    # writeback (auto_da_alloc); done for every small file it made copies 5x slower.
    if os.fstat(dst).st_size:
        os.ftruncate(dst, 0)
    os.lseek(dst, 0, os.SEEK_SET)


def copy_fd(src: int, dst: int, size: int, *, on_step: Callable[[int], None] = lambda _n: None) -> int:
    """Copy ``size`` bytes (fewer if the source ends first) from offset 0 of ``src`` to
    an empty ``dst`` (at offset 0); ``on_step(n)`` after each step (it may raise to stop). Returns
    the bytes copied. Raises ``OSError`` as the calls do. A method the kernel refuses
    is given up and the copy starts again from 0 with the next one."""
    kernel: list[Callable[[int, int], int]] = []
    if hasattr(os, "copy_file_range"):
        kernel.append(lambda off, n: os.copy_file_range(src, dst, n, off, off))
    kernel.append(lambda off, n: os.sendfile(dst, src, off, n))  # writes at dst's position
    started = False
    for call in kernel:
        try:
            if started:
                _restart(dst)
            started = True
            return _kernel_loop(call, size, 0, on_step)
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
    _restart(dst)
    buffer = bytearray(HASH_BUFFER)
    view = memoryview(buffer)
    done = 0
    while done < size:
        n = os.preadv(src, [view[: min(HASH_BUFFER, size - done)]], done)
        if n == 0:
            break
        os.pwrite(dst, view[:n], done)
        done += n
        on_step(n)
    return done


def copy_range(src: int, dst: int, offset: int, length: int, *, step: int = COPY_STEP,
               on_step: Callable[[int], None] = lambda _n: None) -> int:
    """Copy ``length`` bytes at ``offset`` of ``src`` to the same offset of ``dst`` (fewer if
    the source ends first), ``step`` bytes per kernel call; ``on_step(n)`` after each (it may
    raise to stop). Returns the bytes copied; raises ``OSError`` as the calls do. A method the
    kernel refuses is given up and the range is copied again with the next one (writing the
    same bytes at the same place: nothing to undo)."""

    def sendfile(off: int, n: int) -> int:
        os.lseek(dst, off, os.SEEK_SET)  # sendfile writes at dst's position
        return os.sendfile(dst, src, off, n)

    kernel: list[Callable[[int, int], int]] = []
    if hasattr(os, "copy_file_range"):
        kernel.append(lambda off, n: os.copy_file_range(src, dst, n, off, off))
    kernel.append(sendfile)
    for call in kernel:
        try:
            return _range_loop(call, offset, length, step, on_step)
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise

    def user_space(off: int, n: int) -> int:
        data = os.pread(src, min(n, HASH_BUFFER), off)
        return os.pwrite(dst, data, off) if data else 0

    return _range_loop(user_space, offset, length, step, on_step)


def _range_loop(call: Callable[[int, int], int], offset: int, length: int, step: int,
                on_step: Callable[[int], None]) -> int:
    done = 0
    pending = 0  # on_step once per ``step`` bytes, whatever each call moved
    while done < length:
        n = call(offset + done, min(step, length - done))
        if n == 0:
            break  # the source is shorter than it was: the caller's size check fails
        done += n
        pending += n
        if pending >= step or done == length:
            on_step(pending)
            pending = 0
    if pending:
        on_step(pending)
    return done


def xxh3_of_range(fd: int, offset: int, length: int) -> tuple[str, int]:
    """(``xxh3:<hex>`` of the XXH3-128, bytes read) of ``length`` bytes of ``fd`` at
    ``offset`` (fewer if it ends first), read through one reused buffer of
    :data:`HASH_BUFFER` bytes."""
    digest = xxhash.xxh3_128()
    buffer = bytearray(HASH_BUFFER)
    view = memoryview(buffer)
    done = 0
    while done < length:
        n = os.preadv(fd, [view[: min(HASH_BUFFER, length - done)]], offset + done)
        if n == 0:
            break
        digest.update(view[:n])
        done += n
    return XXH3_PREFIX + digest.hexdigest(), done


def xxh3_of_fd(fd: int, size: int | None = None) -> tuple[str, int]:
    """(``xxh3:<hex>`` of the XXH3-128, bytes read) of ``fd`` from offset 0, up to
    ``size`` bytes or its end. A file of at most :data:`HASH_BUFFER` bytes is read in
    one ``pread``, a larger one through one reused buffer."""
    if size is None:
        size = os.fstat(fd).st_size
    if size <= HASH_BUFFER:
        data = os.pread(fd, size, 0)
        return XXH3_PREFIX + xxhash.xxh3_128_hexdigest(data), len(data)
    digest = xxhash.xxh3_128()
    buffer = bytearray(HASH_BUFFER)
    view = memoryview(buffer)
    offset = 0
    while offset < size:
        n = os.preadv(fd, [view[: min(HASH_BUFFER, size - offset)]], offset)
        if n == 0:
            break
        digest.update(view[:n])
        offset += n
    return XXH3_PREFIX + digest.hexdigest(), offset


def xxh3_of_own_range(fd: int, offset: int = 0, length: int | None = None) -> tuple[str, int]:
    """(``xxh3:<hex>``, bytes hashed) of ``length`` bytes of ``fd`` at ``offset`` (to its end
    when None; fewer if it ends first), for a file only the caller writes (see the module
    docstring): ranges above :data:`HASH_BUFFER` bytes are hashed through ``mmap`` windows
    of :data:`MAP_WINDOW` bytes, smaller ones read with one ``pread``. Same value as
    :func:`xxh3_of_range`."""
    end = os.fstat(fd).st_size
    if length is not None:
        end = min(end, offset + length)
    if end - offset <= HASH_BUFFER:
        data = os.pread(fd, max(end - offset, 0), offset)
        return XXH3_PREFIX + xxhash.xxh3_128_hexdigest(data), len(data)
    digest = xxhash.xxh3_128()
    position = offset
    while position < end:
        start = position - position % mmap.ALLOCATIONGRANULARITY  # mmap offsets are aligned
        size = min(MAP_WINDOW, end - start)
        with mmap.mmap(fd, size, prot=mmap.PROT_READ, offset=start) as window:
            window.madvise(mmap.MADV_SEQUENTIAL)
            with memoryview(window) as view:
                digest.update(view[position - start:])
        position = start + size
    return XXH3_PREFIX + digest.hexdigest(), end - offset


def xxh3_of_own_small(fd: int, size: int) -> str:
    """``xxh3:<hex>`` of a small file only the caller writes, expected to hold ``size``
    bytes (under :data:`HASH_BUFFER`): one ``pread`` of one byte more than expected, so
    that a longer file hashes differently from its first ``size`` bytes without a ``fstat``."""
    return XXH3_PREFIX + xxhash.xxh3_128_hexdigest(os.pread(fd, size + 1, 0))
