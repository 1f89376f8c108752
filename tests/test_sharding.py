"""The shard sizing rule (dmg/sharding.py): many small files make a few large shards;
a few large files are spread over the free slots, up to one file per shard."""

from __future__ import annotations

import pytest

from dmg.connectors.base import Entry
from dmg.sharding import MIN_SHARD_FILES, MIN_TINY_SHARD_FILES, cut_for_slots, cut_shards, shard_size

KIB = 1024
MIB = 1024 * KIB
CAPS = {"max_files": 2000, "max_bytes": 256 * MIB}


def files(count: int, size: int) -> list[Entry]:
    return [Entry(path=f"f{i:06d}", size=size, mtime=0.0) for i in range(count)]


def flat(shards: list[list[Entry]]) -> list[str]:
    return [e.path for group in shards for e in group]


def test_many_small_files_make_few_shards_of_hundreds_of_files() -> None:
    entries = files(5000, 8 * KIB)
    shards = cut_for_slots(entries, slots=4, **CAPS)
    assert 2 <= len(shards) <= 8  # the old fixed 64 files made 79
    assert all(len(group) >= MIN_SHARD_FILES for group in shards)
    assert flat(shards) == [e.path for e in entries]  # every file once, in order


def test_tiny_files_make_one_shard_per_free_slot_of_at_least_1250_files() -> None:
    for count, slots, expected in ((5000, 8, 4), (10_000, 8, 8), (5000, 3, 3), (1000, 4, 1),
                                   (20_000, 16, 16), (2000, 8, 1), (2500, 8, 2)):
        entries = files(count, 8 * KIB)
        shards = cut_for_slots(entries, slots=slots, **CAPS)
        assert len(shards) == expected, (count, slots, len(shards))
        assert min(len(g) for g in shards) >= min(count, MIN_TINY_SHARD_FILES)
        assert max(len(g) for g in shards) - min(len(g) for g in shards) <= 1
        assert flat(shards) == [e.path for e in entries]
    assert len(cut_for_slots(files(100_000, 8 * KIB), slots=16, **CAPS)) == 50  # the cap still holds
    # larger files keep two shards per slot (a slow one is evened out by the others)
    assert len(cut_for_slots(files(400, MIB), slots=8, **CAPS)) == 16


def test_a_small_set_is_one_shard() -> None:
    assert len(cut_for_slots(files(150, KIB), slots=8, **CAPS)) == 1


def test_a_few_large_files_use_every_free_slot() -> None:
    entries = files(40, 4 * MIB)  # 160 MiB: one shard under the 256 MiB cap before
    for slots in (2, 4, 8, 40, 100):
        shards = cut_for_slots(entries, slots=slots, **CAPS)
        assert min(slots, 40) <= len(shards) <= 40, (slots, len(shards))
        assert flat(shards) == [e.path for e in entries]


def test_uneven_sizes_still_reach_the_free_slots() -> None:
    entries = [Entry("big", 1024 * MIB, 0.0), *files(3, 5 * MIB)]
    shards = cut_for_slots(entries, slots=4, **CAPS)
    assert len(shards) == 4 and flat(shards) == [e.path for e in entries]


def test_no_more_shards_than_files_and_none_for_nothing() -> None:
    assert len(cut_for_slots(files(3, 100 * MIB), slots=16, **CAPS)) == 3
    assert cut_for_slots([], slots=4, **CAPS) == []


def test_the_configured_caps_still_bound_a_shard() -> None:
    shards = cut_for_slots(files(50, KIB), slots=1, max_files=4, max_bytes=256 * MIB)
    assert len(shards) == 13 and max(len(g) for g in shards) == 4
    size = shard_size(files=10**6, total_bytes=10**12, slots=2, max_files=2000, max_bytes=256 * MIB)
    assert size.max_files == 2000 and size.max_bytes == 256 * MIB


def test_unknown_sizes_count_as_a_shards_worth() -> None:
    shards = cut_for_slots(files(10, -1), slots=4, **CAPS)  # SQL tables: may be large
    assert len(shards) >= 4 and flat(shards) == [f"f{i:06d}" for i in range(10)]
    assert len(cut_shards(files(10, -1), max_files=100, max_bytes=256 * MIB)) == 1


def test_caps_must_be_positive() -> None:
    with pytest.raises(ValueError):
        shard_size(files=1, total_bytes=1, slots=1, max_files=0, max_bytes=1)
    with pytest.raises(ValueError):
        cut_shards(files(1, 1), max_files=1, max_bytes=0)
