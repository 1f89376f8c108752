"""How activity run and run statuses follow from their parts (pure rules).

- An activity run is Cancelled once a user cancelled it (before it ended; whatever its
  shards report afterwards); Queued until claimed; Failed once the dispatcher failed it or
  any of its shards failed (with that shard's error); Succeeded once it is planned
  and every shard succeeded (a plan with no shard succeeds at once); else InProgress.
- A run is Queued while all its activity runs are; Cancelled/Failed/Succeeded once all
  of them ended (Cancelled if any was cancelled, else Failed if any failed); else
  InProgress.
"""

from __future__ import annotations

from sqlalchemy import case, func, select
from sqlalchemy.orm import object_session

from dmg.cloud.models import CANCELLED, FAILED, IN_PROGRESS, QUEUED, SUCCEEDED, ActivityRun, Run, Shard
from dmg.shards.status import CLOUD_FAILED, CLOUD_SUCCEEDED

TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
CANCEL_REASON = "cancelled by a user"


def derive_activity_run(activity_run: ActivityRun, *, now: float) -> None:
    """Recompute ``status``, ``error`` and ``ended_at`` of an activity run in place."""
    status, error = _activity_status(activity_run)
    if status in TERMINAL and activity_run.status not in TERMINAL:
        activity_run.ended_at = now
    elif status not in TERMINAL:
        activity_run.ended_at = None
    activity_run.status = status
    if not activity_run.failed_by_dispatcher:
        activity_run.error = error


def _activity_status(activity_run: ActivityRun) -> tuple[str, str]:
    if activity_run.cancelled_at is not None:
        return CANCELLED, CANCEL_REASON
    if activity_run.failed_by_dispatcher:
        return FAILED, activity_run.error
    if activity_run.claim_epoch is None:
        return QUEUED, ""
    if not activity_run.planned:
        return IN_PROGRESS, ""
    first, unfinished = _shard_summary(activity_run)
    if first is not None:
        where = first.node or "a node"
        return FAILED, f"shard {first.index} failed on {where}: {first.error or 'no reason given'}"
    if unfinished == 0:
        return SUCCEEDED, ""
    return IN_PROGRESS, ""


def _shard_summary(activity_run: ActivityRun) -> tuple[Shard | None, int]:
    """The first failed shard (by index) and the number of shards not succeeded.

    One aggregate query instead of loading every shard (a second one reads the failed
    shard, if any): a report on an activity run of thousands of shards stays cheap.
    """
    session = object_session(activity_run)
    if session is None:  # built in memory
        shards = sorted(activity_run.shards, key=lambda s: s.index)
        failed = [s for s in shards if s.status == CLOUD_FAILED]
        return (failed[0] if failed else None), sum(1 for s in shards if s.status != CLOUD_SUCCEEDED)
    unfinished, first_failed = session.execute(
        select(func.count().filter(Shard.status != CLOUD_SUCCEEDED),
               func.min(case((Shard.status == CLOUD_FAILED, Shard.index))))
        .where(Shard.activity_run_id == activity_run.id)).one()
    first = None
    if first_failed is not None:  # rare: read that shard for its node and error
        first = session.scalars(select(Shard).where(Shard.activity_run_id == activity_run.id,
                                                    Shard.index == first_failed)).first()
    return first, int(unfinished or 0)


def derive_run(run: Run, *, now: float) -> None:
    """Recompute ``status``, ``started_at`` and ``ended_at`` of a run in place.

    Reads one aggregate row per activity status rather than every activity run, so
    a report on a run of hundreds of activities costs one small query.
    """
    session = object_session(run)
    if session is None:  # a run built in memory: look at its activity runs directly
        rows = _aggregate_loaded(run)
    else:
        rows = [(status, count, started, ended) for status, count, started, ended in session.execute(
            select(ActivityRun.status, func.count(), func.min(ActivityRun.started_at),
                   func.max(ActivityRun.ended_at))
            .where(ActivityRun.run_id == run.id).group_by(ActivityRun.status))]
    counts = {status: count for status, count, _s, _e in rows}
    total = sum(counts.values())
    if counts.get(QUEUED, 0) == total:
        status = QUEUED
    elif sum(counts.get(s, 0) for s in TERMINAL) == total:
        status = CANCELLED if counts.get(CANCELLED) else FAILED if counts.get(FAILED) else SUCCEEDED
    else:
        status = IN_PROGRESS
    started = [s for _st, _c, s, _e in rows if s is not None]
    run.started_at = min(started) if started else None
    if status in TERMINAL:
        ended = [e for _st, _c, _s, e in rows if e is not None]
        run.ended_at = max(ended) if ended else now
    else:
        run.ended_at = None
    run.status = status


def _aggregate_loaded(run: Run) -> list[tuple[str, int, float | None, float | None]]:
    rows = []
    for status in {a.status for a in run.activity_runs}:
        mine = [a for a in run.activity_runs if a.status == status]
        started = [a.started_at for a in mine if a.started_at is not None]
        ended = [a.ended_at for a in mine if a.ended_at is not None]
        rows.append((status, len(mine), min(started) if started else None,
                     max(ended) if ended else None))
    return rows
