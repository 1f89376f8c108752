"""How long the cloud keeps ended runs (``DMG_CLOUD_RUN_RETENTION``).

A run that ended (Succeeded, Failed or Cancelled) more than the retention ago is
deleted with everything below it: its activity runs, shards, shard attempts and per-file
results. Rows go child first, so the rule holds whether or not the database enforces
``ON DELETE CASCADE`` (SQLite only does with its pragma on). A retention of 0 keeps every
run. Runs still queued or running are never touched, however old.

The figures ``/metrics`` reads from the database (bytes and files moved, runs by
status) drop by what a prune deleted; Prometheus reads a falling counter as a reset.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dmg.cloud.models import ActivityRun, FileRecord, Run, Shard, ShardAttempt
from dmg.cloud.service.derive import TERMINAL

#: At most this many runs go per prune, so one prune never holds the write lock for long.
BATCH = 200


def prune_runs(session: Session, *, now: float, retention: float) -> int:
    """Delete up to :data:`BATCH` runs that ended before ``now - retention``; -> how many."""
    if retention <= 0:
        return 0
    run_ids = list(session.scalars(
        select(Run.id).where(Run.status.in_(TERMINAL), Run.ended_at.is_not(None),
                             Run.ended_at < now - retention).order_by(Run.ended_at).limit(BATCH)))
    if not run_ids:
        return 0
    activity_ids = select(ActivityRun.id).where(ActivityRun.run_id.in_(run_ids)).scalar_subquery()
    for child in (FileRecord, ShardAttempt, Shard):
        session.execute(delete(child).where(child.activity_run_id.in_(activity_ids)))
    session.execute(delete(ActivityRun).where(ActivityRun.run_id.in_(run_ids)))
    session.execute(delete(Run).where(Run.id.in_(run_ids)))
    session.flush()
    return len(run_ids)
