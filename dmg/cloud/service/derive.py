"""How activity run and run statuses follow from their parts (pure rules over the
counters of :mod:`.counters`, kept in the same transaction as every shard report).

- An activity run is Cancelled once a user cancelled it (before it ended; whatever its
  shards report afterwards); Queued until claimed; Failed once the dispatcher failed it or
  any of its shards failed (with the lowest failed shard's error); Succeeded once it is
  planned and every shard succeeded (a plan with no shard succeeds at once); else
  InProgress.
- A run is Queued while all its activity runs are; Cancelled/Failed/Succeeded once all
  of them ended (Cancelled if any was cancelled, else Failed if any failed); else
  InProgress.
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import object_session

from dmg.cloud.models import CANCELLED, FAILED, IN_PROGRESS, QUEUED, SUCCEEDED, ActivityRun, Run, Shard
from dmg.cloud.service import counters

TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
CANCEL_REASON = "cancelled by a user"


def derive_activity_run(activity_run: ActivityRun, *, now: float) -> None:
    """Recompute ``status``, ``error`` and ``ended_at`` of an activity run in place (and
    its run's activity counters when its status moves)."""
    before = activity_run.status
    status, error = _activity_status(activity_run)
    if status in TERMINAL and activity_run.status not in TERMINAL:
        activity_run.ended_at = now
    elif status not in TERMINAL:
        activity_run.ended_at = None
    activity_run.status = status
    if not activity_run.failed_by_dispatcher:
        activity_run.error = error
    counters.activity_status_changed(activity_run, before, now=now)


def _activity_status(activity_run: ActivityRun) -> tuple[str, str]:
    if activity_run.cancelled_at is not None:
        return CANCELLED, CANCEL_REASON
    if activity_run.failed_by_dispatcher:
        return FAILED, activity_run.error
    if activity_run.claim_epoch is None:
        return QUEUED, ""
    if not activity_run.planned:
        return IN_PROGRESS, ""
    if activity_run.first_failed_index is not None:
        first = _shard_at(activity_run, activity_run.first_failed_index)
        where = (first.node if first else "") or "a node"
        reason = (first.error if first else "") or "no reason given"
        return FAILED, f"shard {activity_run.first_failed_index} failed on {where}: {reason}"
    if activity_run.shards_total - activity_run.shards_succeeded == 0:
        return SUCCEEDED, ""
    return IN_PROGRESS, ""


def _shard_at(activity_run: ActivityRun, index: int) -> Shard | None:
    """The shard at ``index`` (rare: read for a failed shard's node and error)."""
    session = object_session(activity_run)
    if session is None:
        return next((s for s in activity_run.shards if s.index == index), None)
    return session.scalars(select(Shard).where(Shard.activity_run_id == activity_run.id,
                                               Shard.index == index)).first()


def derive_run(run: Run, *, now: float) -> None:
    """Recompute ``status``, ``started_at`` and ``ended_at`` of a run in place from its
    activity counters; the first and last times are read once, when the run starts and
    when it ends."""
    total = run.activities_total
    ended = run.activities_succeeded + run.activities_failed + run.activities_cancelled
    if run.activities_queued == total:
        status = QUEUED
    elif ended == total:
        status = CANCELLED if run.activities_cancelled else FAILED if run.activities_failed else SUCCEEDED
    else:
        status = IN_PROGRESS
    if status != QUEUED and run.started_at is None:
        run.started_at = _times(run)[0]
    if status in TERMINAL:
        if run.ended_at is None or run.status not in TERMINAL:
            run.ended_at = _times(run)[1] or now
    else:
        run.ended_at = None
    if run.status != status:
        run.status = status
        _announce(run)


#: PostgreSQL channel of run status changes (payload: the run id): every cloud process
#: wakes its run long-polls (:mod:`dmg.cloud.api.runwait`, :mod:`dmg.cloud.api.listen`).
RUN_STATUS_CHANNEL = "dmg_run_status"


def _announce(run: Run) -> None:
    """NOTIFY the run's new status to the other cloud processes sharing a PostgreSQL database,
    sent when the transaction commits (never if it rolls back). SQLite: one process, whose
    write requests wake its own waiters."""
    session = object_session(run)
    if session is not None and session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, :payload)"),
                        {"channel": RUN_STATUS_CHANNEL, "payload": run.id})


def _times(run: Run) -> tuple[float | None, float | None]:
    """The first start and the last end of the run's activity runs."""
    session = object_session(run)
    if session is None:
        started = [a.started_at for a in run.activity_runs if a.started_at is not None]
        ended = [a.ended_at for a in run.activity_runs if a.ended_at is not None]
        return (min(started) if started else None), (max(ended) if ended else None)
    first, last = session.execute(select(func.min(ActivityRun.started_at), func.max(ActivityRun.ended_at))
                                  .where(ActivityRun.run_id == run.id)).one()
    return first, last
