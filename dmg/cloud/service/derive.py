"""How activity run and run statuses follow from their parts (rules over the counters of
:mod:`.counters`, kept in the same transaction as every shard report; :mod:`.counters`
writes what they give).

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

from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from dmg.cloud.models import CANCELLED, FAILED, IN_PROGRESS, QUEUED, SUCCEEDED, ActivityRun, Shard

TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
CANCEL_REASON = "cancelled by a user"


def activity_outcome(session: Session, activity_run: Any, *, now: float) -> tuple[str, str, float | None]:
    """``(status, error, ended_at)`` of an activity run (an ORM object or a row read by
    :mod:`.counters`: anything with its columns as attributes), as its counters say."""
    status, error = _activity_status(session, activity_run)
    ended_at = activity_run.ended_at
    if status in TERMINAL and activity_run.status not in TERMINAL:
        ended_at = now
    elif status not in TERMINAL:
        ended_at = None
    if activity_run.failed_by_dispatcher:
        error = activity_run.error
    return status, error, ended_at


def _activity_status(session: Session, activity_run: Any) -> tuple[str, str]:
    if activity_run.cancelled_at is not None:
        return CANCELLED, CANCEL_REASON
    if activity_run.failed_by_dispatcher:
        return FAILED, activity_run.error
    if activity_run.claim_epoch is None:
        return QUEUED, ""
    if not activity_run.planned:
        return IN_PROGRESS, ""
    if activity_run.first_failed_index is not None:
        first = session.execute(select(Shard.node, Shard.error).where(  # rare: a failed shard's node, error
            Shard.activity_run_id == activity_run.id, Shard.index == activity_run.first_failed_index)).first()
        where = (first.node if first else "") or "a node"
        reason = (first.error if first else "") or "no reason given"
        return FAILED, f"shard {activity_run.first_failed_index} failed on {where}: {reason}"
    if activity_run.shards_total - activity_run.shards_succeeded == 0:
        return SUCCEEDED, ""
    return IN_PROGRESS, ""


def run_outcome(session: Session, run: Any, *, now: float) -> tuple[str, float | None, float | None]:
    """``(status, started_at, ended_at)`` of a run (an ORM object or a row) from its activity
    counters; the first and last times are read once, when the run starts and when it ends."""
    total = run.activities_total
    ended = run.activities_succeeded + run.activities_failed + run.activities_cancelled
    if run.activities_queued == total:
        status = QUEUED
    elif ended == total:
        status = CANCELLED if run.activities_cancelled else FAILED if run.activities_failed else SUCCEEDED
    else:
        status = IN_PROGRESS
    started_at, ended_at = run.started_at, run.ended_at
    if status != QUEUED and started_at is None:
        started_at = _times(session, run.id)[0]
    if status in TERMINAL:
        if ended_at is None or run.status not in TERMINAL:
            ended_at = _times(session, run.id)[1] or now
    else:
        ended_at = None
    return status, started_at, ended_at


#: PostgreSQL channel of run status changes (payload: the run id): every cloud process
#: wakes its run long-polls (:mod:`dmg.cloud.api.runwait`, :mod:`dmg.cloud.api.listen`).
RUN_STATUS_CHANNEL = "dmg_run_status"


def announce(session: Session, run_id: str) -> None:
    """NOTIFY the run's new status to the other cloud processes sharing a PostgreSQL database,
    sent when the transaction commits (never if it rolls back). SQLite: one process, whose
    write requests wake its own waiters."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, :payload)"),
                        {"channel": RUN_STATUS_CHANNEL, "payload": run_id})


def _times(session: Session, run_id: str) -> tuple[float | None, float | None]:
    """The first start and the last end of the run's activity runs."""
    first, last = session.execute(select(func.min(ActivityRun.started_at), func.max(ActivityRun.ended_at))
                                  .where(ActivityRun.run_id == run_id)).one()
    return first, last
