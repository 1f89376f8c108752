"""Shards this dispatcher planned itself: placed without reading them back first.

A shard whose plan this process recorded (:func:`dmg.site.plans.record_plan` answered
queued) is, as that script left it, attempt 0 on no node, with no earlier attempt, and has
the stores of its plan: exactly what a placement round would read back from the shard's
hash before placing it. :class:`FreshShards` keeps that much per shard id until placement
takes it, so the round that places a fresh shard goes straight to its placement script
(:func:`dmg.site.placing.place_shard`) without a read of the hash before it.

Nothing here is trusted beyond what that script checks: it reads the shard's node and
attempt atomically and refuses (nothing written) a shard that is not as the caller
expects (placed, requeued, moved, planned again by a replay); placement then forgets the
entry, and the next round reads the shard from Redis like any other. Only the one-step
placement (a Celery sender on the site's Redis, :class:`dispatcher.messages.ShardMessages`)
uses it: the step-by-step path has no such check. At most :data:`LIMIT` entries are kept
(the oldest go first; those shards are read from Redis). Thread-safe: planner threads add,
the placement thread takes.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable
from dataclasses import replace

from dmg.shards import ShardStores

#: Entries kept at most (a bulk run's backlog; the oldest are dropped past it).
LIMIT = 20_000


class FreshShards:
    """The stores of each shard this process planned and has not placed yet."""

    def __init__(self, *, limit: int = LIMIT) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._stores: dict[str, ShardStores] = {}  # insertion order: the oldest first

    def add(self, shard_ids: Iterable[str], stores: ShardStores, *, small: Collection[str] = ()) -> None:
        """``shard_ids`` were recorded fresh (attempt 0, no node) with ``stores``; those in
        ``small`` are small by their plan (:attr:`dmg.shards.ShardStores.small`)."""
        packable = replace(stores, small=True) if small else stores
        with self._lock:
            for shard_id in shard_ids:
                self._stores[shard_id] = packable if shard_id in small else stores
            while len(self._stores) > self.limit:
                del self._stores[next(iter(self._stores))]

    def known(self, shard_ids: Iterable[str]) -> dict[str, ShardStores]:
        """The stores of those of ``shard_ids`` known fresh (still kept until :meth:`forget`)."""
        with self._lock:
            return {s: self._stores[s] for s in shard_ids if s in self._stores}

    def forget(self, *shard_ids: str) -> None:
        """Placed, or found not fresh: read from Redis from now on."""
        with self._lock:
            for shard_id in shard_ids:
                self._stores.pop(shard_id, None)

    def __len__(self) -> int:
        return len(self._stores)
