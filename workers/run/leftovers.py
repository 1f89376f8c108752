"""Staging leftovers of fenced attempts: who removes them, and when.

An attempt writes under its staging id ``<shard>.<attempt>``
(:func:`dmg.ids.staging_id`) and lists it in ``started:<node>`` until
it ends (:meth:`dmg.site.state.SiteState.mark_finished`). What it staged is removed:

- by the attempt itself when it aborts: a failed file, or a fenced attempt on a
  living node (the copy engine aborts every file in hand when it finds a newer
  attempt, :func:`dmg.transfer.copy_entries`);
- by its node when that node starts again (:mod:`workers.agent.reclaim`);
- by the node that runs the shard's newer attempt, once every file of that attempt
  is in place or given up, before it reports the shard succeeded or failed
  (:func:`clean_fenced_staging`): this covers a node that never comes back. A run
  that ended has no staging of its shards left.

The last is safe because an older attempt is fenced (it can no longer commit:
``SiteState.is_current`` is false for it) and the shard's current attempt, the
only one that may commit, has finished writing: nothing of the shard writes any
more, so the connector may remove what it can name by target alone (S3's
incomplete multipart uploads). A fenced attempt still running somewhere loses its staging and ends
stale, as it would have anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from dmg.connectors import Connector, StoreSpec
from dmg.errors import BrokerError, DmgError
from dmg.shards import ShardSpec
from dmg.site.state import SiteState
from dmg.transfer.paths import sink_path_for

log = logging.getLogger(__name__)


def remove_staging(sink: StoreSpec, staging: str, *, connector_factory: Callable[[StoreSpec], Connector],
                   targets: Sequence[str] = ()) -> int:
    """Remove what attempt ``staging`` left in the staging place of ``sink``; raises DmgError.

    Call it only when no live process writes under that staging id; with ``targets``
    (the paths the attempt may have written) only when no attempt of the shard writes
    (:meth:`dmg.connectors.Connector.cleanup_staging`).
    """
    connector = connector_factory(sink)
    try:
        return connector.cleanup_staging(staging, targets=targets)
    finally:
        connector.close()


def shard_targets(spec: ShardSpec) -> list[str]:
    """The sink paths a shard's attempts write (the copy engine's mapping)."""
    return [sink_path_for(e.path, source_prefix=spec.source_path, sink_prefix=spec.sink_path)
            for e in spec.entries]


def clean_fenced_staging(state: SiteState, shard_id: str, attempt: int, *,
                         connector_factory: Callable[[StoreSpec], Connector]) -> int:
    """Once attempt ``attempt`` of ``shard_id`` stopped writing: remove the staging of every older
    attempt some node began and never ended, and forget it. Returns the objects removed.

    Does nothing unless ``attempt`` is still the shard's current attempt. Never raises:
    a sink or broker problem is logged (the leftovers stay hidden; the next attempt's
    node or the old node, if it returns, tries again)."""
    if attempt <= 1:
        return 0
    removed = 0
    try:
        fenced = state.fenced_started(shard_id, attempt)
        if not fenced or not state.is_current(shard_id, attempt):
            return 0
        spec = ShardSpec.from_json((state.shard(shard_id) or {}).get("spec"))
        sink, targets = spec.sink_store, shard_targets(spec)
        for node, staging in fenced:
            try:
                removed += remove_staging(sink, staging, connector_factory=connector_factory, targets=targets)
            except DmgError as exc:
                log.warning("staging of a fenced attempt not cleaned up staging_id=%s node=%s error=%s",
                            staging, node, exc)
                continue
            state.forget_started(node, staging)
    except DmgError as exc:  # MalformedSpec among them
        log.warning("cannot clean up fenced attempts shard=%s error=%s", shard_id, exc)
    except BrokerError as exc:
        log.warning("cannot clean up fenced attempts (broker unreachable) shard=%s error=%s", shard_id, exc)
    if removed:
        log.info("removed %d staging leftovers of fenced attempts shard=%s attempt=%d", removed, shard_id,
                 attempt)
    return removed
