"""One range of a file copied by the kernel into the same range of another
(dmg.connectors.localcopy.copy_range, the part path of a split file): each fallback writes
exactly that range, and XXH3 of a range is the XXH3 of its bytes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import xxhash

from dmg.connectors import localcopy

MiB = 1024 * 1024


def _refuse(*_args: object) -> int:
    raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))


def _copy_range(tmp_path: Path, data: bytes, offset: int, length: int, *,
                dst_size: int) -> tuple[int, bytes, list[int]]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data)
    dst.write_bytes(b"\0" * dst_size)  # the staging file of a split object: created at its final size
    steps: list[int] = []
    with open(src, "rb") as s, open(dst, "r+b") as d:
        copied = localcopy.copy_range(s.fileno(), d.fileno(), offset, length, step=MiB, on_step=steps.append)
    return copied, dst.read_bytes(), steps


@pytest.mark.parametrize("refused", [(), ("copy_file_range",), ("copy_file_range", "sendfile")])
def test_every_fallback_writes_exactly_the_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 refused: tuple[str, ...]) -> None:
    for name in refused:
        monkeypatch.setattr(os, name, _refuse)
    data = os.urandom(6 * MiB)
    offset, length = 2 * MiB + 5, 3 * MiB + 17

    copied, written, steps = _copy_range(tmp_path, data, offset, length, dst_size=len(data))

    assert copied == sum(steps) == length and len(steps) >= 4  # on_step about once per MiB
    end = offset + length
    assert written[offset:end] == data[offset:end]
    assert written[:offset] == b"\0" * offset and written[end:] == b"\0" * (len(data) - end)


def test_a_source_shorter_than_the_range_copies_what_it_has(tmp_path: Path) -> None:
    data = os.urandom(3 * MiB)

    copied, written, _steps = _copy_range(tmp_path, data, 2 * MiB, 2 * MiB, dst_size=4 * MiB)

    assert copied == MiB
    assert written[2 * MiB:3 * MiB] == data[2 * MiB:]


def test_xxh3_of_a_range_is_the_xxh3_of_its_bytes(tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 9)
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        for offset, length in [(0, 0), (7, 10), (MiB - 3, 2 * MiB), (3 * MiB, 9)]:
            expected = "xxh3:" + xxhash.xxh3_128_hexdigest(data[offset:offset + length])
            assert localcopy.xxh3_of_range(fd, offset, length) == (expected, length)
        assert localcopy.xxh3_of_range(fd, 3 * MiB, 100)[1] == 9  # past the end: what there is
    finally:
        os.close(fd)
