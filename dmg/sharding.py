"""Cutting an activity's file list into shards, sized by the work and the free slots.

A shard costs a fixed ~40 ms of CPU (a task, a staging area, its reports) on top of
its files and bytes, and the gateway copies as many shards at once as it has free
slots. :func:`shard_size` picks the limits of one shard from the listing's totals:

- aim at ``SHARDS_PER_SLOT`` (2) shards per free slot, so that every slot gets work
  and the last shard to finish is a small part of the whole; when the files are tiny
  (under :data:`TINY_FILE` on average) one shard per free slot
  (:data:`SHARDS_PER_SLOT_TINY`): their shards end within moments of each other anyway,
  and each shard more is a fixed cost with nothing to even out (tiny files are shared
  out by their count, under the byte cap);
- but a shard of tiny files carries at least :data:`MIN_TINY_SHARD_FILES` files (1,250;
  fewer only when the whole listing has fewer):
  at ~0.1 ms of CPU per file the fixed ~40 ms stays under a fifth of the shard. Measured on
  2 cores (2 nodes of 4 slots, 5,000 x 8 KiB on tmpfs): 4 shards of 1,250 copied in 1.48 s
  where 8 of 625 took 1.91 s (`bench/RESULTS.md`);
- but never fewer than :data:`MIN_SHARD_FILES` files (200) nor fewer than
  :data:`MIN_SHARD_BYTES` bytes (4 MiB) per shard, where the fixed cost would
  dominate: a big set of small files makes a few shards of hundreds of files;
- and never more than the configured caps (``shard_max_files``, default 2,000, and
  ``shard_max_bytes``, default 256 MiB): a lost node loses at most that much work.

:func:`cut_for_slots` cuts with those limits and then, while there are fewer shards
than free slots, halves the largest shard whose halves would each still be worth a
shard (twice the minimum files or bytes): a few large files are spread over the free
slots (40 files of 4 MiB on 4 free slots makes 8 shards), up to one file per shard. An
entry of unknown size (-1: a SQL table) counts as :data:`MIN_SHARD_BYTES`. Files keep
their order; every entry lands in exactly one shard; an empty listing gives no shard.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dmg.connectors.base import Entry

SHARDS_PER_SLOT = 2
SHARDS_PER_SLOT_TINY = 1
#: Files smaller than this on average are tiny: their shards are sized by the fixed cost.
TINY_FILE = 64 * 1024
MIN_SHARD_FILES = 200
MIN_SHARD_BYTES = 4 * 1024 * 1024
MIN_TINY_SHARD_FILES = 1250


@dataclass(frozen=True)
class ShardSize:
    """The most files and bytes one shard may hold."""

    max_files: int
    max_bytes: int


def shard_size(*, files: int, total_bytes: int, slots: int, max_files: int, max_bytes: int) -> ShardSize:
    """The limits of one shard for ``files`` files of ``total_bytes`` bytes over ``slots``
    free slots (see the module docstring); ``max_files``/``max_bytes`` cap them.
    ValueError when a cap is not positive."""
    if max_files < 1 or max_bytes < 1:
        raise ValueError("max_files and max_bytes must be positive")
    tiny = files > 0 and total_bytes < files * TINY_FILE
    target = max(1, slots) * (SHARDS_PER_SLOT_TINY if tiny else SHARDS_PER_SLOT)
    per_files = max(MIN_SHARD_FILES, math.ceil(max(files, 0) / target))
    if tiny:  # as many shards as hold MIN_TINY_SHARD_FILES each, up to the target, evenly
        per_files = math.ceil(files / max(1, min(target, files // MIN_TINY_SHARD_FILES)))
    per_bytes = max(MIN_SHARD_BYTES, math.ceil(max(total_bytes, 0) / target))
    if tiny:  # sized by their count alone (their bytes would cut one shard too many)
        per_bytes = max_bytes
    return ShardSize(max_files=min(max_files, per_files), max_bytes=min(max_bytes, per_bytes))


def weight(entry: Entry) -> int:
    """The bytes an entry counts for: its size, or :data:`MIN_SHARD_BYTES` when the size
    is unknown (-1: a SQL table), which may be large."""
    return entry.size if entry.size >= 0 else MIN_SHARD_BYTES


def cut_shards(entries: Iterable[Entry], *, max_files: int, max_bytes: int) -> list[list[Entry]]:
    """Group ``entries`` in order into batches of at most ``max_files`` files and
    ``max_bytes`` bytes (:func:`weight`). A file larger than ``max_bytes`` is a shard
    of its own. Every entry lands in exactly one shard; an empty input gives no shard.
    """
    if max_files < 1 or max_bytes < 1:
        raise ValueError("max_files and max_bytes must be positive")
    shards: list[list[Entry]] = []
    current: list[Entry] = []
    size = 0
    for entry in entries:
        if current and (len(current) >= max_files or size + weight(entry) > max_bytes):
            shards.append(current)
            current, size = [], 0
        current.append(entry)
        size += weight(entry)
    if current:
        shards.append(current)
    return shards


def _bytes(group: Sequence[Entry]) -> int:
    return sum(weight(e) for e in group)


def _is_tiny(group: Sequence[Entry]) -> bool:
    return bool(group) and _bytes(group) < len(group) * TINY_FILE


def _worth_halving(group: Sequence[Entry]) -> bool:
    """Both halves of ``group`` would still carry a shard's worth of work."""
    if _is_tiny(group):  # shared out by their count, as in shard_size
        return len(group) >= 2 * MIN_TINY_SHARD_FILES
    return len(group) > 1 and (len(group) >= 2 * MIN_SHARD_FILES or _bytes(group) >= 2 * MIN_SHARD_BYTES)


def cut_for_slots(entries: Sequence[Entry], *, slots: int, max_files: int,
                  max_bytes: int) -> list[list[Entry]]:
    """Cut ``entries`` into shards sized by :func:`shard_size`, then spread them over at
    least ``min(slots, len(entries))`` shards (see the module docstring)."""
    size = shard_size(files=len(entries), total_bytes=_bytes(entries), slots=slots,
                      max_files=max_files, max_bytes=max_bytes)
    shards = cut_shards(entries, max_files=size.max_files, max_bytes=size.max_bytes)
    while len(shards) < slots:
        splittable = [i for i, group in enumerate(shards) if _worth_halving(group)]
        if not splittable:
            break
        largest = max(splittable, key=lambda i: (_bytes(shards[i]), len(shards[i])))
        group = shards[largest]
        half = _halve(group)
        shards[largest:largest + 1] = [group[:half], group[half:]]
    return shards


def _halve(group: Sequence[Entry]) -> int:
    """Where to split ``group`` (more than one file) so that both halves carry about
    the same bytes (the same count when they are empty files)."""
    total = _bytes(group)
    if total <= 0:
        return len(group) // 2
    running = 0
    for index, entry in enumerate(group[:-1], start=1):
        running += weight(entry)
        if running * 2 >= total:
            return index
    return len(group) - 1
