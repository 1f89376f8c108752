"""The shard spec: what the planner records for a shard and every node reads.

The dispatcher's planner builds a :class:`ShardSpec` per shard and stores
``spec.to_json()`` in the site state (``shard:<id>`` field ``spec``); placement,
reclaim and the runners read it back with :meth:`ShardSpec.from_json` once, where it
comes out of Redis; placement and rebalance, which need only the two stores, read
:class:`ShardStores` (no entry is built: a 1,250-file spec costs a third of the time).
The Celery message carries only the shard's id and attempt (small JSON, DESIGN.md),
never the spec.

The JSON (unchanged from the dicts earlier versions wrote by hand, so nodes of the
previous and the next version read each other's)::

    {"shard_id", "activity_run_id", "index",
     "source": {"store": <StoreSpec JSON>, "path"}, "sink": {"store": ..., "path"},
     "entries": [<Entry JSON>, plus "sink": <Entry JSON>|null when the planner listed the sink],
     "options": {...},
     "kind": "part", "part": <PartSpec JSON>}      # the last two for a part shard only

A spec that cannot be read raises :class:`MalformedSpec` (a :class:`dmg.errors.Fatal`)
with one line naming what is wrong; never a KeyError from deep inside a runner.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from dmg.connectors.base import Entry, StoreSpec
from dmg.errors import Fatal

#: An ordinary shard: a batch of files copied by the copy engine.
KIND_COPY: Final = "copy"
#: One range of a very large object written from several nodes (:mod:`workers.run.part`).
KIND_PART: Final = "part"
KINDS: Final = (KIND_COPY, KIND_PART)

#: A shard at most this large by its plan is *small*: placement may carry it in one Celery
#: message with other small shards when the backlog exceeds the free slots
#: (:mod:`dispatcher.packing`). 64 files and 1 MiB copy in well under a second on any store
#: dmg reaches (a 1 MiB object at 10 MiB/s, 64 small-file round trips of a few ms each), so
#: a shard carried behind up to seven others starts a few seconds late at worst; a shard of
#: unknown size (an SQL key range, an entry without a size), a part of a large object, or a
#: shard whose activity sets a bandwidth limit (its time is the limit's, not its size's) is
#: never small.
SMALL_MAX_FILES: Final = 64
SMALL_MAX_BYTES: Final = 1024 * 1024

_HINT = "the dispatcher wrote a spec this node cannot read; check that every node runs the same version"


class MalformedSpec(Fatal):
    """A shard or part spec that cannot be read; the message says what is wrong."""


def _mapping(body: object, what: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise MalformedSpec(f"{what} is malformed (expected an object, got {type(body).__name__})",
                            hint=_HINT)
    return body


@dataclass(frozen=True)
class PartSpec:
    """One part of a very large object: ``length`` bytes at ``offset`` of ``entry``, written
    as part ``part_number`` of ``parts_total`` into the sink's distributed write ``handle``
    (begun once by the planner) at ``target``. ``object`` is :func:`dmg.ids.split_object_id`."""

    object: str
    entry: Entry
    target: str
    part_number: int
    parts_total: int
    offset: int
    length: int
    handle: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"object": self.object, "entry": self.entry.to_json(), "target": self.target,
                "part_number": self.part_number, "parts_total": self.parts_total,
                "offset": self.offset, "length": self.length, "handle": dict(self.handle)}

    @classmethod
    def from_json(cls, raw: builtins.object) -> PartSpec:
        """Raises :class:`MalformedSpec`."""
        body = _mapping(raw, "part shard spec")
        try:
            part = cls(str(body["object"]), Entry.from_json(body["entry"]), str(body["target"]),
                       int(body["part_number"]), int(body["parts_total"]), int(body["offset"]),
                       int(body["length"]), dict(body["handle"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedSpec(f"part shard spec is malformed ({_why(exc)})", hint=_HINT) from exc
        if not 1 <= part.part_number <= part.parts_total or part.offset < 0 or part.length < 0:
            raise MalformedSpec(f"part shard spec is malformed (part {part.part_number} of "
                                f"{part.parts_total}, offset {part.offset}, length {part.length})",
                                hint=_HINT)
        return part


@dataclass(frozen=True)
class ShardSpec:
    """A shard as planned; see the module docstring for its JSON."""

    shard_id: str
    activity_run_id: str
    index: int
    source_store: StoreSpec
    source_path: str
    sink_store: StoreSpec
    sink_path: str
    entries: tuple[Entry, ...]
    options: dict[str, Any]
    #: The sink's entry per source path as the planner listed it (None: absent there).
    sink_hints: dict[str, Entry | None] = field(default_factory=dict)
    #: Set for a part shard (:data:`KIND_PART`); its ``entries`` are the object's entry.
    part: PartSpec | None = None

    @property
    def kind(self) -> str:
        return KIND_COPY if self.part is None else KIND_PART

    @property
    def files_total(self) -> int:
        return len(self.entries)

    @property
    def bytes_total(self) -> int:
        """Bytes to copy, as listed (entries of unknown size, ``-1``, count 0)."""
        return sum(max(e.size, 0) for e in self.entries)

    @property
    def store_names(self) -> list[str]:
        """The names of the stores the shard reads and writes (source first)."""
        return [name for name in (self.source_store.name, self.sink_store.name) if name]

    @property
    def small(self) -> bool:
        """Whether the shard is small by its plan (:data:`SMALL_MAX_FILES`, :data:`SMALL_MAX_BYTES`)."""
        return (self.part is None and not self.options.get("bandwidth")
                and is_small(e.size for e in self.entries))

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "shard_id": self.shard_id,
            "activity_run_id": self.activity_run_id,
            "index": self.index,
            "source": {"store": self.source_store.to_json(), "path": self.source_path},
            "sink": {"store": self.sink_store.to_json(), "path": self.sink_path},
            "entries": [self._entry_json(e) for e in self.entries],
            "options": dict(self.options),
        }
        if self.part is not None:
            body["kind"] = KIND_PART
            body["part"] = self.part.to_json()
        return body

    def _entry_json(self, entry: Entry) -> dict[str, Any]:
        body = entry.to_json()
        if entry.path in self.sink_hints:
            hint = self.sink_hints[entry.path]
            body["sink"] = hint.to_json() if hint is not None else None
        return body

    @classmethod
    def from_json(cls, raw: object) -> ShardSpec:
        """Read a spec written by :meth:`to_json` (of this version or the previous one).

        Raises :class:`MalformedSpec`: a missing field, a wrong type, an unknown
        ``kind``, a part shard without its ``part``."""
        body, kind = _body_and_kind(raw)
        try:
            source, sink = _mapping(body["source"], "shard source"), _mapping(body["sink"], "shard sink")
            raw_entries = body.get("entries", [])
            if not isinstance(raw_entries, list):
                raise TypeError(f"entries is a {type(raw_entries).__name__}, not a list")
            spec = cls(
                shard_id=str(body["shard_id"]),
                activity_run_id=str(body.get("activity_run_id", "")),
                index=int(body.get("index", 0)),
                source_store=StoreSpec.from_json(source["store"]),
                source_path=str(source.get("path", "")),
                sink_store=StoreSpec.from_json(sink["store"]),
                sink_path=str(sink.get("path", "")),
                entries=tuple(Entry.from_json(e) for e in raw_entries),
                options=dict(body.get("options") or {}),
                sink_hints={str(e["path"]): Entry.from_json(e["sink"]) if e["sink"] else None
                            for e in raw_entries if "sink" in e},
                part=PartSpec.from_json(body.get("part")) if kind == KIND_PART else None,
            )
        except MalformedSpec:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedSpec(f"shard spec is malformed ({_why(exc)})", hint=_HINT) from exc
        return spec



def _body_and_kind(raw: object) -> tuple[Mapping[str, Any], str]:
    """A spec body and its ``kind``; MalformedSpec for a non-mapping or an unknown kind."""
    body = _mapping(raw, "shard spec")
    kind = body.get("kind") or KIND_COPY
    if kind not in KINDS:
        raise MalformedSpec(f"shard spec is malformed (unknown kind {str(kind)[:40]!r}; "
                            f"expected one of {', '.join(KINDS)})", hint=_HINT)
    return body, str(kind)

@dataclass(frozen=True)
class ShardStores:
    """The stores of a shard spec, read without its entries (what placement needs)."""

    source_store: StoreSpec
    sink_store: StoreSpec
    #: Small by its plan (:attr:`ShardSpec.small`): it may ride in one message with others.
    small: bool = False

    @property
    def store_names(self) -> list[str]:
        """The names of the stores the shard reads and writes (source first)."""
        return [name for name in (self.source_store.name, self.sink_store.name) if name]

    @classmethod
    def from_json(cls, raw: object) -> ShardStores:
        """Read the stores of a :meth:`ShardSpec.to_json` body. Raises :class:`MalformedSpec`
        (an unknown ``kind``, a missing or malformed store); its entries are looked at only
        for their count and sizes, and only up to :data:`SMALL_MAX_FILES` of them."""
        body, kind = _body_and_kind(raw)
        try:
            source, sink = _mapping(body["source"], "shard source"), _mapping(body["sink"], "shard sink")
            entries, options = body.get("entries"), body.get("options")
            small = (kind == KIND_COPY and isinstance(entries, list)
                     and not (isinstance(options, Mapping) and options.get("bandwidth"))
                     and is_small(_size(e) for e in entries))
            return cls(StoreSpec.from_json(source["store"]), StoreSpec.from_json(sink["store"]), small)
        except MalformedSpec:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedSpec(f"shard spec is malformed ({_why(exc)})", hint=_HINT) from exc


def is_small(sizes: Iterable[int]) -> bool:
    """Whether files of these sizes (-1: unknown) make a small shard: at most
    :data:`SMALL_MAX_FILES` of them, every size known, :data:`SMALL_MAX_BYTES` in all.
    Stops reading ``sizes`` past the limits."""
    total = 0
    for files, size in enumerate(sizes, start=1):
        if size < 0 or files > SMALL_MAX_FILES:
            return False
        total += size
        if total > SMALL_MAX_BYTES:
            return False
    return True


def _size(entry: object) -> int:
    """An entry's size as its JSON gives it; -1 (unknown) when it cannot be read here (the
    runner reports what is wrong with it)."""
    size = entry.get("size") if isinstance(entry, Mapping) else None
    return size if isinstance(size, int) and not isinstance(size, bool) else -1


def _why(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc}"
    return f"{type(exc).__name__}: {exc}"
