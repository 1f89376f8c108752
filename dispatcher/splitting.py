"""Planning one very large object as parts written from several nodes, committed once.

:func:`split_large_entries` takes the entries the planner listed and keeps aside
those worth splitting: larger than ``split_above`` and than two parts
(:class:`dmg.transfer.split.SplitOptions`; for a local file to S3, by default, above 8 GiB:
:func:`large_file_split`), from a source that reads byte ranges
(:class:`~dmg.connectors.capabilities.RangedRead`: S3, files), to a sink with
``distributed_write`` (:mod:`dmg.connectors.distributed`), and — for an
incremental copy — absent from the sink or of another size (an object that may
be up to date goes the usual way, where the worker decides). For each, it begins
the sink's write **once**: the handle is recorded in Redis under the object
(:meth:`dmg.site.splits.SplitObjects.save_handle`) before any shard names it, so a
replayed plan reuses it (a second handle that lost the race is aborted).

It returns the remaining entries and one :class:`dmg.shards.PartSpec` per part; the
planner turns each into a shard of kind ``"part"`` (:class:`dmg.shards.ShardSpec` with
``part`` set). Running a part and the single commit are
:mod:`workers.run.part`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dmg.connectors import Connector, Entry, StoreSpec
from dmg.connectors.capabilities import FileRangeWrite, LocalFiles, RangedRead
from dmg.connectors.distributed import distributed_writer
from dmg.errors import DmgError
from dmg.ids import split_object_id
from dmg.shards import PartSpec
from dmg.site.splits import SplitObjects
from dmg.site.state import SiteState
from dmg.transfer import sink_path_for
from dmg.transfer.options import ALWAYS, IF_DIFFERENT
from dmg.transfer.split import SplitOptions, part_ranges

log = logging.getLogger(__name__)


#: The default ``split_above`` for a local file to a sink that sends a file's parts from the
#: file itself, each checked by the store (S3): one node alone sends such a file at about
#: 0.9 CPU-s per GiB of its own (bench/upload_cost.py), with a few 8 MiB parts in flight, so
#: only a file this large gains from several nodes' CPU and network; below it one shard is
#: as fast and cheaper (issue 11: one 1 GiB file to moto, split into 64 MiB part shards on 2
#: nodes or one shard with 4 parts in flight: the same seconds within the noise, 15-20 % more
#: of the server's CPU for the split's larger parts, 16 shards' fixed costs).
FROM_FILE_SPLIT_ABOVE = 8 * 1024 * 1024 * 1024


def large_file_split(split: SplitOptions, options: Mapping[str, Any], *, source: Connector,
                     sink: Connector) -> SplitOptions:
    """The rule that splits one large file across nodes: ``split_above`` when the activity's
    options give it; else, from local files to a :class:`FileRangeWrite` sink (S3), above
    :data:`FROM_FILE_SPLIT_ABOVE`; else above ``split_above``'s default (256 MiB: file → file,
    where the kernel copies each part and several nodes' disks pay, and Azure)."""
    if "split_above" in options or not (isinstance(source, LocalFiles) and isinstance(sink, FileRangeWrite)):
        return split
    return dataclasses.replace(split, split_above=max(split.split_above, FROM_FILE_SPLIT_ABOVE))


def reads_ranges(source: Connector) -> bool:
    return isinstance(source, RangedRead)


def _worth_copying_whole(entry: Entry, target: str, *, overwrite: str,
                         sink_entries: Mapping[str, Entry] | None) -> bool:
    """True when the object surely has to be copied (so it may be split)."""
    if overwrite == ALWAYS:
        return True
    if sink_entries is None:  # the sink could not be listed: let the worker decide
        return False
    hint = sink_entries.get(target)
    return hint is None or (overwrite == IF_DIFFERENT and hint.size != entry.size)


def split_large_entries(
    entries: Sequence[Entry],
    *,
    activity_run_id: str,
    source: Connector,
    source_path: str,
    sink_spec: StoreSpec,
    sink_path: str,
    options: Mapping[str, Any],
    overwrite: str,
    sink_entries: Mapping[str, Entry] | None,
    state: SiteState,
    connector_factory: Callable[[StoreSpec], Connector],
) -> tuple[list[Entry], list[PartSpec]]:
    """``(entries left for ordinary shards, parts)``; see the module docstring.

    Raises what the sink's ``begin_distributed`` raises (Retryable: plan again later).
    """
    split = SplitOptions.from_json(options)
    candidates = [e for e in entries if split.splits(e.size)]
    if not candidates or not reads_ranges(source):
        return list(entries), []
    sink = connector_factory(sink_spec)
    try:
        writer = distributed_writer(sink)
        split = large_file_split(split, options, source=source, sink=sink)
        if writer is None or not any(split.splits(e.size) for e in candidates):
            return list(entries), []
        objects = SplitObjects(state)
        rest: list[Entry] = []
        parts: list[PartSpec] = []
        index = 0
        for entry in entries:
            target = sink_path_for(entry.path, source_prefix=source_path, sink_prefix=sink_path)
            if not split.splits(entry.size) or not _worth_copying_whole(
                    entry, target, overwrite=overwrite, sink_entries=sink_entries):
                rest.append(entry)
                continue
            key = split_object_id(activity_run_id, index)
            index += 1
            handle = objects.handle(key)
            if handle is None:
                fresh = writer.begin_distributed(target, size=entry.size)
                handle = objects.save_handle(key, fresh)
                if handle != fresh:  # another planner of this run won the race
                    with contextlib.suppress(DmgError):
                        writer.abort_distributed(target, fresh)
            ranges = part_ranges(entry.size, split.part_size)
            parts += [PartSpec(key, entry, target, number, len(ranges), offset, length, handle)
                      for number, offset, length in ranges]
            log.info("object split activity_run=%s path=%s bytes=%d parts=%d",
                     activity_run_id, entry.path, entry.size, len(ranges))
        return rest, parts
    finally:
        sink.close()
