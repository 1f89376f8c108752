"""Thin Celery tasks: take ids, call :mod:`workers.run.shard`, return small JSON.

Stores are opened with the site's credentials (:func:`dmg.credentials.open_store`).
A task taken from a Redis that turns out to be another gateway's (swapped under the
node; :mod:`dmg.site.identity`) is handed back to that Redis's queue, not run: the node
agent stops the node at its next heartbeat.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

from celery.exceptions import Reject

from dmg.credentials import open_store
from dmg.shards import ShardOutcome
from dmg.shards.status import OUTCOME_FAILED
from dmg.site.identity import ForeignRedis
from workers.app import app
from workers.context import node_context
from workers.names import COPY_SHARD, COPY_SHARDS
from workers.resultstore import ResultWithTheEnd
from workers.run.delivery import NextStart, next_start
from workers.run.shard import ShardFailed, run_shard

log = logging.getLogger(__name__)

#: Seconds a worker waits before handing back a task of another gateway's Redis (no busy loop
#: while the node agent stops the node).
FOREIGN_PAUSE = 1.0


@app.task(name=COPY_SHARD, bind=True, acks_late=True, reject_on_worker_lost=True)
def copy_shard(self: Any, shard_id: str, attempt: int, epoch: int | None = None) -> dict[str, Any]:
    """Copy attempt ``attempt`` of shard ``shard_id``, placed by the dispatcher of ``epoch``.

    Returns ``{status, node, attempt, files, bytes}`` (status ``succeeded``,
    ``stale``, ``duplicate`` or ``cancelled``: see :mod:`workers.run.shard`); a failed shard
    raises :class:`ShardFailed` after reporting it. A succeeded attempt's result is stored
    by the attempt's last Redis step (:class:`workers.resultstore.ResultWithTheEnd`).
    """
    settings = self.app.dmg_settings
    context = node_context(settings)
    try:
        # The site's identity is checked by the attempt's start script, before it writes
        # anything (dmg.site.state.SiteState.begin_run): one round trip, not two.
        outcome = run_shard(shard_id, int(attempt), node=context.node, state=context.state,
                            reporter=context.reporter,
                            connector_factory=partial(open_store, settings=settings),
                            epoch=None if epoch is None else int(epoch),
                            max_worker_deaths=settings.shard_max_worker_deaths,
                            final_result=ResultWithTheEnd(self))
    except ForeignRedis as exc:
        log.error("not running shard=%s attempt=%s: %s", shard_id, attempt, exc)
        time.sleep(FOREIGN_PAUSE)
        raise Reject(str(exc), requeue=True) from exc
    if outcome.status == OUTCOME_FAILED:
        raise ShardFailed(f"shard {shard_id} attempt {attempt} failed on {outcome.node}: {outcome.error}")
    return outcome.task_result()


@app.task(name=COPY_SHARDS, bind=True, acks_late=True, reject_on_worker_lost=True)
def copy_shards(self: Any, shards: list[list[Any]], epoch: int | None = None) -> list[dict[str, Any]]:
    """Copy several small shards one after another, each ``[shard_id, attempt]`` as
    :func:`copy_shard` copies one (:mod:`dispatcher.packing`: the message only carries them).

    A shard that fails, is stale, cancelled or a duplicate does not stop the others; the
    message is acked after the last (``acks_late``). Redelivered after its process died, it
    runs again: the shards that ended are stale (their start refuses them), the one that was
    running starts again (one more delivery), the rest run. Returns each shard's outcome
    (:meth:`dmg.shards.ShardOutcome.to_json`); nothing raises for a failed shard (each
    reported its failure).

    Each shard's end starts the next one in the same round trip
    (:func:`workers.run.delivery.next_start`): the next one's start is still its own, checked
    and fenced on its own, taken after the end of the one before it.
    """
    settings = self.app.dmg_settings
    context = node_context(settings)
    results: list[dict[str, Any]] = []
    at_epoch = None if epoch is None else int(epoch)
    started: NextStart | None = None
    for index, (shard_id, attempt) in enumerate(shards):
        then_start = None
        if index + 1 < len(shards):
            following = shards[index + 1]
            then_start = next_start(context.state, str(following[0]), int(following[1]), context.node,
                                    epoch=at_epoch)
        try:
            outcome = run_shard(str(shard_id), int(attempt), node=context.node, state=context.state,
                                reporter=context.reporter,
                                connector_factory=partial(open_store, settings=settings),
                                epoch=at_epoch, max_worker_deaths=settings.shard_max_worker_deaths,
                                carried=True, started=started, then_start=then_start)
        except ForeignRedis as exc:
            log.error("not running shards=%s: %s", ",".join(str(s[0]) for s in shards), exc)
            time.sleep(FOREIGN_PAUSE)
            raise Reject(str(exc), requeue=True) from exc
        except Exception:  # reported failed by the attempt where it could; the others go on
            log.exception("shard of a packed message crashed shard=%s attempt=%s", shard_id, attempt)
            crashed = ShardOutcome(OUTCOME_FAILED, context.node, int(attempt), str(shard_id),
                                   error="internal error in the worker")
            results.append(crashed.to_json())
            continue
        finally:
            started = then_start
        results.append(outcome.to_json())
    return results
