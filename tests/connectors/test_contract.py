"""One contract, every store: the same tests against file, s3, azureblob and sql.

Each test gets a fresh, empty store of one type through the ``kit`` fixture
(see ``kits.py``); what differs between stores lives in the kit, not here.
"""

from __future__ import annotations

import hashlib

import pytest

from dmg.connectors.base import Connector
from dmg.errors import BadInput, NotFound, PermissionDenied
from tests.connectors.kits import StoreKit


def listed(connector: Connector, prefix: str = "") -> list[str]:
    return [entry.path for entry in connector.list(prefix)]


def test_a_committed_object_is_listed_and_stated(kit: StoreKit) -> None:
    path, data = kit.writable("listed"), kit.payload(1)

    kit.put(path, data)

    assert path in listed(kit.connector)
    entry = kit.connector.stat(path)
    assert entry.path == path
    assert entry.size == (len(data) if kit.exact_size else -1)
    assert entry.mtime > 0
    assert entry.checksum in (None, hashlib.md5(data).hexdigest())


def test_read_returns_the_committed_bytes_from_any_offset(kit: StoreKit) -> None:
    path, data = kit.writable("read"), kit.payload(2)
    kit.put(path, data)

    assert kit.content(path) == data
    for offset in (1, 7, len(data) // 2, len(data) - 1, len(data), len(data) + 10):
        with kit.connector.open_read(path, offset=offset) as reader:
            assert reader.read() == data[offset:], offset


def test_reading_in_small_pieces_gives_the_same_bytes(kit: StoreKit) -> None:
    path, data = kit.writable("pieces"), kit.payload(3)
    kit.put(path, data)

    pieces = []
    with kit.connector.open_read(path) as reader:
        while piece := reader.read(333):
            pieces.append(piece)

    assert b"".join(pieces) == data


def test_a_staged_write_is_invisible_until_commit(kit: StoreKit) -> None:
    path, data = kit.writable("staged"), kit.payload(4)
    before = listed(kit.connector)

    writer = kit.connector.open_write(path, staging_id="shard-1:1")
    half = len(data) // 2
    writer.write(data[:half])
    writer.write(data[half:])

    assert kit.content(path) == kit.empty
    assert listed(kit.connector) == before
    writer.commit()
    assert kit.content(path) == data


def test_abort_leaves_nothing_behind(kit: StoreKit) -> None:
    path, data = kit.writable("aborted"), kit.payload(5)
    before = listed(kit.connector)

    writer = kit.connector.open_write(path, staging_id="shard-1:1")
    writer.write(data)
    writer.abort()
    writer.abort()  # twice is fine

    assert kit.content(path) == kit.empty
    assert listed(kit.connector) == before
    assert kit.connector.cleanup_staging("shard-1:1") >= 0
    assert listed(kit.connector) == before


def test_a_dead_writers_staging_is_gone_once_cleaned_up_and_a_newer_attempt_commits(kit: StoreKit) -> None:
    """What workers.run.leftovers relies on: cleanup_staging with the targets removes what a writer
    whose process died staged (file, S3); committing the path again leaves nothing (Azure)."""
    if kit.staged is None:
        pytest.skip(f"{kit.kind} stages nothing outside a transaction")
    path = kit.writable("dead")
    data = (hashlib.sha256(b"dead").digest() * (kit.large_size // 32 + 1))[: kit.large_size]
    before = listed(kit.connector)
    dead = kit.connector.open_write(path, staging_id="shard-9.1")
    dead.write(data)  # never committed nor aborted: its process died
    assert kit.staged(path) > 0

    kit.connector.cleanup_staging("shard-9.1", targets=[path])
    if kit.kind != "azureblob":  # Azure keeps uncommitted blocks until a commit or 7 days
        assert kit.staged(path) == 0
    assert listed(kit.connector) == before
    kit.put(path, data[::-1], staging_id="shard-9.2")

    assert kit.content(path) == data[::-1]
    assert kit.staged(path) == 0


def test_abort_keeps_the_previous_version(kit: StoreKit) -> None:
    path, old, new = kit.writable("kept"), kit.payload(6), kit.payload(7)
    kit.put(path, old)

    writer = kit.connector.open_write(path, staging_id="shard-2:1")
    writer.write(new)
    writer.abort()

    assert kit.content(path) == old


def test_committing_twice_is_a_no_op(kit: StoreKit) -> None:
    path, data = kit.writable("twice"), kit.payload(8)

    writer = kit.connector.open_write(path, staging_id="shard-3:1")
    writer.write(data)
    writer.commit()
    writer.commit()

    assert kit.content(path) == data


def test_a_replayed_commit_with_the_same_staging_id_adds_nothing(kit: StoreKit) -> None:
    path, data = kit.writable("replay"), kit.payload(9)

    kit.put(path, data, staging_id="shard-4:1")
    kit.put(path, data, staging_id="shard-4:1")  # e.g. a task redelivered after a crash

    assert kit.content(path) == data


def test_delete_is_idempotent(kit: StoreKit) -> None:
    path = kit.writable("deleted")
    kit.put(path, kit.payload(10))

    kit.connector.delete(path)
    assert kit.content(path) == kit.empty
    kit.connector.delete(path)
    kit.connector.delete(kit.writable("never-written") if kit.hierarchical else "no_such_table")
    assert kit.content(path) == kit.empty


def test_missing_paths_are_not_found(kit: StoreKit) -> None:
    missing = "no/such/object.bin" if kit.hierarchical else "no_such_table"

    with pytest.raises(NotFound):
        kit.connector.stat(missing)
    with pytest.raises(NotFound):
        kit.connector.open_read(missing)
    with pytest.raises(NotFound):
        list(kit.connector.list(missing))


def test_listing_is_sorted_and_an_empty_store_lists_nothing(kit: StoreKit) -> None:
    assert listed(kit.connector) == []
    paths = [kit.writable(name) for name in ("b", "a", "c")]
    for n, path in enumerate(paths):
        kit.put(path, kit.payload(n), staging_id=f"shard-{n}:1")

    assert listed(kit.connector) == sorted(paths)


def test_a_prefix_lists_only_what_is_under_it(kit: StoreKit) -> None:
    if not kit.hierarchical:
        path = kit.writable("alone")
        kit.writable("other")
        assert listed(kit.connector, path) == [path]
        return
    for n, path in enumerate(("x/1.bin", "x/y/2.bin", "xy/3.bin", "x.bin")):
        kit.put(path, kit.payload(1), staging_id=f"seed-{n}")

    assert listed(kit.connector, "x") == ["x/1.bin", "x/y/2.bin"]
    assert listed(kit.connector, "x/") == ["x/1.bin", "x/y/2.bin"]
    assert listed(kit.connector, "x.bin") == ["x.bin"]


def test_a_path_leaving_the_store_is_refused(kit: StoreKit) -> None:
    if not kit.hierarchical:
        with pytest.raises(BadInput):
            kit.connector.stat("../etc/passwd")
        return
    for path in ("../outside.bin", "dir/../../outside.bin"):
        with pytest.raises(PermissionDenied):
            kit.connector.open_write(path, staging_id="shard-5:1")
        with pytest.raises(PermissionDenied):
            kit.connector.stat(path)


def test_an_empty_object_round_trips(kit: StoreKit) -> None:
    path = kit.writable("empty")
    data = kit.empty if kit.empty is not None else b""

    kit.put(path, data)

    assert kit.content(path) == data
    if kit.exact_size:
        assert kit.connector.stat(path).size == 0


def test_a_large_object_round_trips_through_several_parts(kit: StoreKit) -> None:
    path = kit.writable("large")
    if kit.hierarchical:
        data = (hashlib.sha256(b"large").digest() * (kit.large_size // 32 + 1))[: kit.large_size]
    else:
        data = kit.payload(0) + b"".join(f"{i},name {i}\n".encode() for i in range(3, 2000))

    writer = kit.connector.open_write(path, staging_id="shard-6:1")
    for start in range(0, len(data), 1 << 20):
        writer.write(data[start:start + (1 << 20)])
    assert kit.content(path) == kit.empty
    writer.commit()

    assert kit.content(path) == data


def test_the_store_is_reachable(kit: StoreKit) -> None:
    kit.connector.check_reachable()
