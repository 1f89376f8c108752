"""Cutting an activity's file list into shards (a batch of files by count and bytes)."""

from __future__ import annotations

from collections.abc import Iterable

from dmg.connectors.base import Entry


def cut_shards(entries: Iterable[Entry], *, max_files: int, max_bytes: int) -> list[list[Entry]]:
    """Group ``entries`` in order into batches of at most ``max_files`` files and
    ``max_bytes`` bytes. A file larger than ``max_bytes`` is a shard of its own.
    Every entry lands in exactly one shard; an empty input gives no shard.
    """
    if max_files < 1 or max_bytes < 1:
        raise ValueError("max_files and max_bytes must be positive")
    shards: list[list[Entry]] = []
    current: list[Entry] = []
    size = 0
    for entry in entries:
        if current and (len(current) >= max_files or size + entry.size > max_bytes):
            shards.append(current)
            current, size = [], 0
        current.append(entry)
        size += entry.size
    if current:
        shards.append(current)
    return shards
