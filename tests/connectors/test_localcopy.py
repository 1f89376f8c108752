"""The kernel copy of the file store (dmg.connectors.localcopy): each fallback copies the
same bytes, and XXH3 reads a file whatever its size."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import xxhash

from dmg.connectors import localcopy

MiB = 1024 * 1024


def _copy(tmp_path: Path, data: bytes) -> bytes:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data)
    steps: list[int] = []
    with open(src, "rb") as s, open(dst, "w+b") as d:
        copied = localcopy.copy_fd(s.fileno(), d.fileno(), len(data), on_step=steps.append)
    assert copied == sum(steps) == len(data)
    return dst.read_bytes()


def _refuse(*_args: object) -> int:
    raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))


@pytest.mark.parametrize("refused", [(), ("copy_file_range",), ("copy_file_range", "sendfile")])
def test_every_fallback_copies_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              refused: tuple[str, ...]) -> None:
    for name in refused:
        monkeypatch.setattr(os, name, _refuse)
    monkeypatch.setattr(localcopy, "COPY_STEP", MiB)  # several steps
    data = os.urandom(3 * MiB + 17)
    assert _copy(tmp_path, data) == data


def test_another_error_of_the_kernel_is_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(*_args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "copy_file_range", no_space)
    with pytest.raises(OSError) as caught:
        _copy(tmp_path, b"x" * 100)
    assert caught.value.errno == errno.ENOSPC


@pytest.mark.parametrize("size", [0, 10, localcopy.HASH_BUFFER, localcopy.HASH_BUFFER + 1, 3 * MiB])
def test_xxh3_of_a_file_is_the_xxh3_of_its_bytes(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        assert localcopy.xxh3_of_fd(fd) == ("xxh3:" + xxhash.xxh3_128_hexdigest(data), size)
        half = "xxh3:" + xxhash.xxh3_128_hexdigest(data[: size // 2])
        assert localcopy.xxh3_of_fd(fd, size // 2)[0] == half
    finally:
        os.close(fd)


@pytest.mark.parametrize(("size", "offset", "length"), [
    (0, 0, None), (10, 0, None), (localcopy.HASH_BUFFER + 1, 0, None), (5 * MiB + 3, 0, None),
    (5 * MiB + 3, 4097, 3 * MiB), (5 * MiB + 3, 2 * MiB - 1, 10 * MiB), (5 * MiB + 3, 5 * MiB, 3)])
def test_the_mapped_xxh3_of_an_own_file_is_the_xxh3_of_its_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, offset: int, length: int | None) -> None:
    """Given windows smaller than the file (several maps, unaligned starts), the hash of any
    range, and of a range past the end, is that of the bytes there, as a pread hash gives."""
    monkeypatch.setattr(localcopy, "MAP_WINDOW", MiB + 4096)  # not a power of two: unaligned ends
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        expected = data[offset:] if length is None else data[offset:offset + length]
        got = localcopy.xxh3_of_own_range(fd, offset, length)
        assert got == ("xxh3:" + xxhash.xxh3_128_hexdigest(expected), len(expected))
        assert got == localcopy.xxh3_of_range(fd, offset, size if length is None else length)
    finally:
        os.close(fd)


def test_the_small_own_file_xxh3_sees_a_file_longer_or_shorter_than_expected(tmp_path: Path) -> None:
    """Given a small staging file expected to hold 8 KiB, then its XXH3 is the XXH3 of its
    bytes when it holds exactly that, and differs when it holds a byte more or less."""
    data = os.urandom(8192)
    path = tmp_path / "staged"
    expected = localcopy.XXH3_PREFIX + xxhash.xxh3_128_hexdigest(data)
    for content, same in ((data, True), (data + b"x", False), (data[:-1], False)):
        path.write_bytes(content)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert (localcopy.xxh3_of_own_small(fd, len(data)) == expected) is same
        finally:
            os.close(fd)
