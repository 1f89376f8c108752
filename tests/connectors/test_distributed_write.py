"""The ``distributed_write`` capability, one body of tests for every store that has it.

Given a store kit (file, s3 on moto, azureblob on Azurite): parts written out of
order, one of them twice (a re-run), are invisible until the commit, which makes
the object exactly the bytes in offset order; a second commit is a no-op; an
aborted write leaves nothing; stores without the capability say so.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from dmg.connectors.distributed import distributed_writer
from dmg.errors import DmgError
from tests.connectors.kits import KITS, StoreKit

MIB = 1024 * 1024
PART = 5 * MIB  # S3's smallest part


@pytest.fixture(params=["file", "s3", "azureblob"])
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> StoreKit:
    store_kit = KITS[request.param](request, tmp_path)
    request.addfinalizer(store_kit.connector.close)
    return store_kit


def ranges(size: int) -> list[tuple[int, int, int]]:
    return [(i + 1, off, min(PART, size - off)) for i, off in enumerate(range(0, size, PART))]


def test_parts_out_of_order_and_twice_commit_once_to_the_exact_bytes(kit: StoreKit) -> None:
    writer = distributed_writer(kit.connector)
    assert writer is not None
    data = os.urandom(2 * PART + 123)
    handle = writer.begin_distributed("big/object.bin", size=len(data))
    results = {}
    for number, offset, length in reversed(ranges(len(data))):
        results[number] = writer.write_range("big/object.bin", handle, part_number=number, offset=offset,
                                             chunks=iter([data[offset:offset + length]]), length=length)
    number, offset, length = ranges(len(data))[0]  # a re-run of part 1, in two pieces
    piece = data[offset:offset + length]
    results[1] = writer.write_range("big/object.bin", handle, part_number=1, offset=offset,
                                    chunks=iter([piece[:1000], piece[1000:]]), length=length)
    for number, offset, length in ranges(len(data)):
        md5 = results[number].get("md5")
        assert md5 is None or md5 == hashlib.md5(data[offset:offset + length]).hexdigest()
    assert kit.content("big/object.bin") is None  # nothing visible before the commit

    writer.commit_distributed("big/object.bin", handle, list(results.values()), size=len(data))
    writer.commit_distributed("big/object.bin", handle, list(results.values()), size=len(data))  # no-op

    assert kit.content("big/object.bin") == data
    assert [e.path for e in kit.connector.list("big")] == ["big/object.bin"]  # no staging visible


def test_an_aborted_write_leaves_nothing(kit: StoreKit) -> None:
    writer = distributed_writer(kit.connector)
    assert writer is not None
    data = os.urandom(PART + 10)
    handle = writer.begin_distributed("gone.bin", size=len(data))
    writer.write_range("gone.bin", handle, part_number=1, offset=0, chunks=iter([data[:PART]]), length=PART)

    writer.abort_distributed("gone.bin", handle)
    writer.abort_distributed("gone.bin", handle)  # twice: fine

    assert kit.content("gone.bin") is None
    assert list(kit.connector.list("")) == []
    if kit.kind != "azureblob":  # Azure keeps uncommitted blocks until it collects them
        with pytest.raises(DmgError):
            writer.write_range("gone.bin", handle, part_number=2, offset=PART, chunks=iter([data[PART:]]),
                               length=10)


def test_a_short_part_is_refused(kit: StoreKit) -> None:
    writer = distributed_writer(kit.connector)
    assert writer is not None
    handle = writer.begin_distributed("short.bin", size=2 * PART)
    with pytest.raises(DmgError, match="expected"):
        writer.write_range("short.bin", handle, part_number=1, offset=0, chunks=iter([b"x" * 100]),
                           length=PART)
    writer.abort_distributed("short.bin", handle)


def test_a_sql_store_has_no_distributed_write(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    sql = KITS["sql-sqlite"](request, tmp_path)
    try:
        assert distributed_writer(sql.connector) is None
    finally:
        sql.connector.close()
