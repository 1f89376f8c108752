"""Cancelling a run, and telling its gateway's dispatcher.

:func:`cancel_run` marks every activity run of the run that has not ended
Cancelled (a user's decision: whatever its shards report afterwards, it stays
Cancelled); a run that already ended is a Conflict, and nothing changes. Nothing
already committed in a sink is rolled back.

The cloud cannot reach a site's broker, so the dispatcher asks: :func:`cancelled_since`
lists the activity runs of its gateway cancelled in the last :data:`CANCEL_WINDOW`
seconds (the dispatcher applies them idempotently: :mod:`dispatcher.cancels`), and the
claim long-poll returns early when one is cancelled while it waits.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from dmg.cloud.models import ActivityRun, Run
from dmg.cloud.service import counters
from dmg.cloud.service.attempts import close_cancelled
from dmg.cloud.service.derive import TERMINAL
from dmg.cloud.service.gateways import NodeIdentity
from dmg.cloud.service.views import run_json
from dmg.errors import Conflict, NotFound

log = logging.getLogger(__name__)

#: How long a cancellation is repeated to the dispatcher (it polls every few seconds).
CANCEL_WINDOW = 3600.0


def cancel_run(session: Session, run_id: str, *, now: float) -> tuple[int, dict[str, Any]]:
    """Cancel a run; -> (gateway id to wake its dispatcher, the run). NotFound for an
    unknown run; Conflict for one that already ended."""
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"run {run_id!r} does not exist", hint="list runs with `dmg runs list`")
    if run.status in TERMINAL:
        raise Conflict(f"run {run_id!r} already ended ({run.status}); there is nothing to cancel",
                       hint="start a new run with `dmg pipeline run`")
    cancelled = []
    for activity_run in counters.lock_activity_runs(session, run_id):  # fresh: one that just ended stays so
        if activity_run.status not in TERMINAL:
            activity_run.cancelled_at = now
            counters.derive_later(session, activity_run, now=now)
            cancelled.append(activity_run.id)
    close_cancelled(session, cancelled, now=now)
    counters.settle(session)  # the run read afresh, its status derived
    log.info("run %s cancelled", run_id)
    return run.gateway_id, run_json(run)


#: Built once: every claim's answer reads it (building it cost about as much as running it).
_CANCELLED_SINCE = (select(ActivityRun.id)
                    .where(ActivityRun.gateway_id == bindparam("gateway_id"),
                           ActivityRun.cancelled_at.is_not(None),
                           ActivityRun.cancelled_at > bindparam("since"))
                    .order_by(ActivityRun.cancelled_at))


def cancelled_since(session: Session, node: NodeIdentity, *, since: float) -> list[str]:
    """The ids of the activity runs of the node's gateway cancelled after ``since``."""
    return list(session.scalars(_CANCELLED_SINCE, {"gateway_id": node.gateway_id, "since": since}))
