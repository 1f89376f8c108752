"""Placing a shard in one step: one script, one round trip.

:func:`place_shard` does atomically (:data:`dmg.site.scripts.PLACE_SHARD`) what placement
did in four round trips: start the attempt (as :meth:`dmg.site.shards.ShardState.new_attempt`:
the shard joins ``queued:<node>``, older attempts are fenced), append its ``placed`` report to
the ``placements`` list (:mod:`dispatcher.reports`), drop its ``pending`` entry, and write its
Celery message to the node's queue (with the ``task-sent`` event), all or nothing. So a
dispatcher that dies at any point leaves either a pending shard with no attempt, or an attempt
whose report and message are both in Redis: nothing to re-issue, nothing sent twice.

The attempt number is the caller's: the message (task id ``<shard>:<attempt>``) is built
before the script runs, from the shard as the caller read it (its ``attempt``, and its
``unsent`` attempt when a requeue left one). The script writes nothing unless that is still
the attempt it would start (the shard has no node, the numbers did not move), and nothing
when a newer dispatcher holds the lease (``epoch``).
"""

from __future__ import annotations

from collections.abc import Sequence

from dmg.shards.status import STATE_QUEUED
from dmg.site import scripts
from dmg.site.state import SiteState

#: :func:`place_shard`'s answers other than the attempt.
SUPERSEDED = 0
CHANGED = -1


def next_attempt(attempt: int, unsent: int | None) -> int:
    """The attempt a placement starts for a shard whose hash holds ``attempt`` and ``unsent``
    (a requeued shard's attempt was bumped already and never sent: that number is reused)."""
    return attempt if unsent is not None and unsent == attempt else attempt + 1


def place_shard(state: SiteState, shard_id: str, node: str, *, attempt: int, epoch: int | None,
                report_entry: str, queue_key: str, message: str, event_channel: str = "",
                event: str = "") -> int:
    """Place ``attempt`` of ``shard_id`` on ``node`` (see the module docstring). Returns the
    attempt, :data:`SUPERSEDED` (a newer dispatcher holds the lease) or :data:`CHANGED` (the
    shard moved since it was read: nothing written). Raises BrokerError."""
    keys = state.keys
    script = state.redis.register_script(scripts.PLACE_SHARD)
    return int(script(keys=[keys.shard(shard_id), keys.placements, keys.pending, queue_key],
                      args=[keys.prefix, shard_id, node, STATE_QUEUED, "" if epoch is None else epoch,
                            attempt, report_entry, message, event_channel, event]))


def place_packed(state: SiteState, node: str, shards: Sequence[tuple[str, int, str]], *,
                 epoch: int | None, queue_key: str, message: str, event_channel: str = "",
                 event: str = "") -> int:
    """Place several shards on ``node`` in ONE message (:data:`dmg.site.scripts.PLACE_PACKED`):
    each of ``shards`` (shard id, attempt expected, report entry) as :func:`place_shard`
    places one, every shard after the first also in the node's ``carried`` set, then the one
    message. All or nothing. Returns how many were placed, :data:`SUPERSEDED`, or ``-i``
    when the ``i``-th shard (1-based) changed since it was read (nothing written). Raises
    BrokerError."""
    keys = state.keys
    script = state.redis.register_script(scripts.PLACE_PACKED)
    args: list[str | int] = [keys.prefix, node, STATE_QUEUED, "" if epoch is None else epoch, message,
                             event_channel, event]
    for shard_id, attempt, entry in shards:
        args += [shard_id, attempt, entry]
    hashes = [keys.shard(shard_id) for shard_id, _attempt, _entry in shards]
    return int(script(keys=[keys.placements, keys.pending, queue_key, *hashes], args=args))
