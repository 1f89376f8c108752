"""Incremental copy: does a source file need copying over what the sink holds?

:func:`decide` answers from the two entries alone; :data:`HASH` asks the engine
to hash the source and compare with the sink's checksum (the sizes match, the
sink knows its MD5, the source does not). Rules per ``overwrite`` mode:

- ``always``: copy.
- ``never``: skip when the sink has the file.
- ``if-newer``: copy when the sink lacks it or the source is newer (by more than
  :data:`MTIME_WINDOW`).
- ``if-different``: copy when the sink lacks it or the sizes differ; skip when both
  checksums are known and equal (copy when they differ); on a sink that keeps
  modified times, skip when they match within :data:`MTIME_WINDOW`; hash the
  source when only the sink's checksum is known; else, on a sink that does not
  keep modified times (object stores record the upload time, in whole seconds),
  skip when its copy is newer than the source (within :data:`MTIME_WINDOW`).

A side of unknown size (``-1``, SQL tables) cannot be compared: such files are
always copied (SQL sinks commit idempotently per shard).
"""

from __future__ import annotations

from dataclasses import dataclass

from dmg.connectors.base import Connector, Entry
from dmg.connectors.capabilities import KeepsMtime
from dmg.transfer.options import ALWAYS, IF_DIFFERENT, IF_NEWER, NEVER

#: Seconds within which two modified times count as equal.
MTIME_WINDOW = 1.0


def keeps_mtime(connector: Connector) -> bool:
    """Whether the sink stores the modified time given at commit (:class:`KeepsMtime`)."""
    return isinstance(connector, KeepsMtime)


@dataclass(frozen=True)
class Decision:
    action: str  # copy | skip | hash
    reason: str


COPY = "copy"
SKIP = "skip"
HASH = "hash"


def decide(source: Entry, sink: Entry | None, mode: str, *, sink_keeps_mtime: bool) -> Decision:
    """What to do with ``source`` given the sink's entry (``None``: the sink lacks it)."""
    if mode == ALWAYS:
        return Decision(COPY, "overwrite=always")
    if sink is None:
        return Decision(COPY, "not in the sink")
    if source.size < 0 or sink.size < 0:
        return Decision(COPY, "size unknown")
    if mode == NEVER:
        return Decision(SKIP, "exists in the sink (overwrite=never)")
    if mode == IF_NEWER:
        if source.mtime > sink.mtime + MTIME_WINDOW:
            return Decision(COPY, "source is newer")
        return Decision(SKIP, "sink is as new (overwrite=if-newer)")
    assert mode == IF_DIFFERENT, mode
    if source.size != sink.size:
        return Decision(COPY, "size differs")
    if source.checksum and sink.checksum:
        if source.checksum.lower() == sink.checksum.lower():
            return Decision(SKIP, "same size and checksum")
        return Decision(COPY, "checksum differs")
    if sink_keeps_mtime and abs(source.mtime - sink.mtime) <= MTIME_WINDOW:
        return Decision(SKIP, "same size and modified time")
    if sink.checksum:
        return Decision(HASH, "same size; checksum to compare")
    if not sink_keeps_mtime and sink.mtime + MTIME_WINDOW >= source.mtime:  # stores keep whole seconds
        return Decision(SKIP, "same size, sink copy newer than the source")
    return Decision(COPY, "modified time differs")
