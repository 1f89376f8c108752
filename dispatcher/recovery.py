"""Minimal recovery: shards queued on a node that went offline go back to pending.

A node is offline when its heartbeat key expired. Each of its queued shards is
fenced at once (its attempt is bumped, so the message waiting in the dead node's
queue can no longer run it), taken off the node's queued set and pushed back to
pending for placement elsewhere. Running shards on a dead node are left to the
full high-availability work (a later issue).
"""

from __future__ import annotations

import logging

from dmg.sitestate import SHARD_QUEUED, SiteState

log = logging.getLogger(__name__)


def known_nodes(state: SiteState) -> set[str]:
    return {n.decode() if isinstance(n, bytes) else str(n)
            for n in state.redis.smembers(state.key("nodes"))}


def requeue_offline_queued(state: SiteState) -> list[str]:
    """Move the queued shards of offline nodes back to pending; returns their ids."""
    live = set(state.heartbeats())
    pending = set(state.pending())
    moved: list[str] = []
    for node in sorted(known_nodes(state) - live):
        for shard_id in sorted(state.queued(node)):
            shard = state.shard(shard_id)
            state.redis.srem(state.key("queued", node), shard_id)
            if shard is None or shard["node"] != node or shard["state"] != SHARD_QUEUED:
                continue  # a stale entry: the shard lives elsewhere now
            state.redis.hincrby(state.key("shard", shard_id), "attempt", 1)
            if shard_id not in pending:
                state.push_pending(shard_id)
                pending.add(shard_id)
            moved.append(shard_id)
            log.warning("shard back to pending from offline node shard=%s node=%s", shard_id, node)
    return moved
