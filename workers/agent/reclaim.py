"""What a node does as it starts: hand back its old work, clean its old staging.

When ``dmg node start`` runs, no process of this node runs a shard yet. So:

- every shard the site state still lists as queued or running on this node
  belongs to the node's previous life (killed, crashed, or stopped before it
  could finish): :func:`hand_back` requeues each with a new attempt (the old one
  is fenced off) at the head of ``pending``, for the dispatcher to place again —
  perhaps here. The broker may still hold the old messages (a running shard's
  message stays unacknowledged until the visibility timeout; a queued one waits in
  ``node.<name>``): when they arrive they are stale and do nothing.
- every attempt the node began and never ended (``started:<node>``) may have
  left staging files in its sink: :func:`clean_staging` removes them with
  :meth:`~dmg.connectors.Connector.cleanup_staging`. This is the node's job, not
  the new attempt's: only this node is sure the old attempt is dead, and only it
  may see a store that is local to it. A node that never comes back leaves that
  to the node of the shard's next attempt (:mod:`workers.run.leftovers`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dmg.attempt_ends import NODE_RESTARTED
from dmg.connectors import Connector, StoreSpec
from dmg.errors import BrokerError, DmgError
from dmg.ids import commit_key
from dmg.shards import ShardSpec
from dmg.site.attempts import requeue
from dmg.site.state import SiteState
from workers.run.leftovers import remove_staging

log = logging.getLogger(__name__)


def hand_back(state: SiteState, node: str) -> list[str]:
    """Requeue every shard listed as queued or running on ``node``; returns the moved ids."""
    moved = []
    for shard_id in sorted(state.queued(node) | state.running(node)):
        if requeue(state, shard_id, node, reason=NODE_RESTARTED) > 0:
            moved.append(shard_id)
            log.warning("shard handed back by a starting node shard=%s node=%s", shard_id, node)
    return moved


def clean_staging(state: SiteState, node: str, staging_ids: set[str], *,
                  connector_factory: Callable[[StoreSpec], Connector]) -> int:
    """Remove the staging leftovers of ``staging_ids``, attempts ``node`` began and never
    ended (read them with ``state.started(node)`` *before* the node's worker starts).

    Returns how many staging objects were removed. An attempt whose sink cannot be
    opened is logged and forgotten (its leftovers stay hidden under the staging
    prefix; nothing reads them). A broker outage is logged, never raised.
    """
    removed = 0
    try:
        for staging in sorted(staging_ids):
            shard = state.shard(commit_key(staging))
            try:
                if shard is not None:
                    sink = ShardSpec.from_json(shard["spec"]).sink_store
                    removed += remove_staging(sink, staging, connector_factory=connector_factory)
            except DmgError as exc:
                log.warning("staging not cleaned up staging_id=%s node=%s error=%s", staging, node, exc)
            state.forget_started(node, staging)
    except BrokerError as exc:
        log.warning("staging cleanup stopped (broker unreachable) node=%s error=%s", node, exc)
    if removed:
        log.info("removed %d staging leftovers of dead attempts node=%s", removed, node)
    return removed


def reclaim_at_start(state: SiteState, node: str) -> tuple[list[str], set[str]]:
    """:func:`hand_back`, and the staging ids to give :func:`clean_staging`; call it before
    the node's worker starts. A broker outage is logged, never raised."""
    try:
        return hand_back(state, node), state.started(node)
    except BrokerError as exc:
        log.warning("cannot reclaim the node's earlier work (broker unreachable) node=%s error=%s", node, exc)
        return [], set()
