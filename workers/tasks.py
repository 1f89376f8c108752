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
from dmg.shards.status import OUTCOME_FAILED
from dmg.site.identity import ForeignRedis
from workers.app import app
from workers.context import node_context
from workers.names import COPY_SHARD
from workers.resultstore import ResultWithTheEnd
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
