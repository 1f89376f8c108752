"""Planning one very large object as parts written from several nodes, committed once.

:func:`split_large_entries` takes the entries the planner listed and keeps aside
those worth splitting: larger than ``split_above`` and than two parts
(:class:`dmg.transfer.split.SplitOptions`), from a source that reads byte ranges
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
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dmg.connectors import Connector, Entry, StoreSpec
from dmg.connectors.capabilities import RangedRead
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
        if writer is None:
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
