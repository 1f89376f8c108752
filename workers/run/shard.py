"""Run one attempt of one shard on this node: the logic behind ``dmg.copy_shard``.

Plain Python (no Celery), so it can be tested and reused directly. :func:`run_shard`
runs the attempt through the one lifecycle of :mod:`workers.run.attempt` (delivery,
worker deaths, cancel, running report, leftovers, final report, finished; its
docstring states the order) with the body the spec calls for:

- a copy shard: :class:`workers.run.copy.CopyBody` (the transfer engine over the
  shard's entries);
- a shard of kind ``"part"`` (one range of a very large object, planned by
  :mod:`dispatcher.splitting`): :class:`workers.run.part.PartBody`.

Outcomes: ``succeeded``, ``failed``, ``stale``, ``duplicate``, ``cancelled``
(:class:`dmg.shards.ShardOutcome`). Reporting never fails a shard (see
:class:`workers.run.outbox.OutboxReporter`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from dmg.connectors import Connector, StoreSpec, connector_for
from dmg.errors import Fatal
from dmg.shards import ShardOutcome, ShardSpec
from dmg.site.state import SiteState
from workers.run.attempt import Attempt, AttemptBody, FinalResult, run_attempt
from workers.run.copy import CopyBody
from workers.run.delivery import NextStart
from workers.run.part import PartBody
from workers.run.reporter import Reporter


class ShardFailed(Fatal):
    """A shard attempt ended failed; the message is the error reported to the cloud."""


def run_shard(
    shard_id: str,
    attempt: int,
    *,
    node: str,
    state: SiteState,
    reporter: Reporter,
    connector_factory: Callable[[StoreSpec], Connector] = connector_for,
    progress_interval: float = 5.0,
    clock: Callable[[], float] = time.time,
    epoch: int | None = None,
    max_worker_deaths: int = 0,
    final_result: FinalResult | None = None,
    carried: bool = False,
    started: NextStart | None = None,
    then_start: NextStart | None = None,
) -> ShardOutcome:
    """Run attempt ``attempt`` of ``shard_id`` on ``node``; see the module docstring.
    ``epoch``: the dispatcher epoch the message carries; ``max_worker_deaths`` 0: no limit;
    ``final_result``: a succeeded attempt's task result stored with its end
    (:class:`workers.run.attempt.FinalResult`); ``carried``: the message carries other shards
    too (:mod:`dispatcher.packing`); ``started``, ``then_start``: the start of this shard taken
    with the end of the one before it, and of the next one with this one's end
    (:func:`workers.run.attempt.run_attempt`)."""

    def body_for(spec: ShardSpec, run: Attempt) -> AttemptBody:
        if spec.part is not None:  # one range of a very large object
            return PartBody(spec, run)
        return CopyBody(spec, run, progress_interval=progress_interval)

    return run_attempt(shard_id, attempt, node=node, state=state, reporter=reporter,
                       connector_factory=connector_factory, body_for=body_for, clock=clock,
                       epoch=epoch, max_worker_deaths=max_worker_deaths, final_result=final_result,
                       carried=carried, started=started, then_start=then_start)
