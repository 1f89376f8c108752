"""Packing: several small shards in one Celery message when the backlog exceeds the free slots.

Every shard is one Celery message by default, and the worker pays Celery's whole cost for it
(kombu's receive and ack, the unacked bookkeeping, the pool's result hand-back, task events,
the tracer): on a busy site that cost is most of a small shard's. When more shards wait than
the nodes have free slots, placement may put up to ``K`` small shards
(:attr:`dmg.shards.ShardStores.small`: no large shard ever waits behind another) in ONE
``dmg.copy_shards`` message to the chosen node's queue (:func:`dmg.site.placing.place_packed`).
The message is only a carrier: each shard keeps its own attempt, fencing, start and end scripts,
reports and file results; the worker runs them one after another in one pool process
(``workers.tasks.copy_shards``). One shard per message stays the rule while the free slots
cover the backlog, so an idle site's latency does not change.

Slots: a packed message occupies one pool process, so it counts as one message against the
node's limit: the shards after its first are in ``carried:<node>`` as well as in
``queued:<node>``, and the node's free slots are ``limit - running - (queued - carried)``
(:class:`dmg.placement.NodeLoad`). Running shards stay truthful: one per busy pool process.

Compatibility: only a node whose heartbeat says it runs ``dmg.copy_shards`` (its
:data:`workers.names.PACKED_CAPABILITY` field, the most shards it takes in one message) is sent
one; a node of an earlier version never is. Recovery, rebalancing and cancels act per shard as
before: a shard of a packed message given a new attempt elsewhere is stale when the old message
reaches it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from dmg.placement import NodeLoad
from dmg.shards import ShardStores


def pack_size(spec: ShardStores | None, node: NodeLoad, loads: Sequence[NodeLoad], *, backlog: int,
              max_queued: int, max_carried: int) -> int:
    """How many shards the message that takes a shard of ``spec`` to ``node`` should carry: 1
    unless the shard is small, ``node`` runs packed messages, and ``backlog`` (the pending
    shards of this round) exceeds the free slots of every node that can take work; then
    enough to spread the backlog over the messages the nodes can still take, at most
    ``max_carried`` and what ``node`` takes."""
    limit = min(node.carries, max_carried)
    if limit < 2 or spec is None or not spec.small:
        return 1
    open_nodes = [n for n in loads if n.can_take((), max_queued=max_queued)]
    free = sum(max(n.free_slots, 0) for n in open_nodes)
    if backlog <= free:
        return 1
    room = sum(max(n.free_slots + max_queued, 0) for n in open_nodes)
    return max(2, min(limit, math.ceil(backlog / max(room, 1))))
