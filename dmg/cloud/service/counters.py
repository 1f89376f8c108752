"""Run and activity-run counters, kept in the transaction that changes a shard or an
activity run, so statuses follow from them without aggregate queries.

An activity run counts its shards (``shards_total``, ``shards_succeeded``,
``shards_failed``, the lowest failed shard's ``first_failed_index``) and the files and
bytes its shards report (``files_done``, ``bytes_done``: the current attempts'
figures). A run counts its activity runs by status (``activities_<status>``) and sums
their files and bytes. Every change goes through three calls:

- :func:`shards_added` when shards are planned;
- :func:`shard_changed` after a report changed a shard (give it the
  :func:`shard_figures` taken before): the batch apply path calls it too;
- :func:`activity_status_changed`, from :func:`.derive.derive_activity_run` when an
  activity run's status moves.

A run's counters make its row a hot one: on PostgreSQL, a transaction that reports
shards first locks the runs it will touch, in one order (:func:`lock_runs`), so two
concurrent report batches queue on a run instead of deadlocking (each holding one
activity run the other wants). SQLite has one writer and needs no lock.

``tests/cloud/test_counters.py`` checks the counters against the aggregates after a
run with failures, retries and a cancel.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session, object_session

from dmg.cloud.models import (
    CANCELLED,
    FAILED,
    IN_PROGRESS,
    QUEUED,
    SUCCEEDED,
    ActivityRun,
    Gateway,
    Run,
    Shard,
)
from dmg.shards.status import CLOUD_FAILED, CLOUD_SUCCEEDED

#: The run column counting activity runs of each status.
ACTIVITY_COLUMNS = {QUEUED: "activities_queued", IN_PROGRESS: "activities_in_progress",
                    SUCCEEDED: "activities_succeeded", FAILED: "activities_failed",
                    CANCELLED: "activities_cancelled"}


class ShardFigures(NamedTuple):
    status: str
    files: int
    bytes: int


def lock_runs(session: Session, *, shard_ids: Iterable[str] = (), activity_run_ids: Iterable[str] = (),
              run_ids: Iterable[str] = (), gateway_id: int | None = None) -> None:
    """Lock (PostgreSQL ``FOR UPDATE``, in id order) the runs of these shards, activity
    runs and runs, and read them afresh; call it before the transaction reads or changes
    any counter. Every writer of counters takes its runs' locks first, so concurrent
    reports, claims and plans of one run queue there (no lost update of a counter, no
    deadlock); nothing on SQLite (one writer at a time). Lock order: the gateway row (the
    dispatcher's lease, :mod:`.leader`) before runs: a caller that will take the gateway's
    lease in this transaction names ``gateway_id`` (or took the lease already)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    if gateway_id is not None:
        session.execute(select(Gateway.id).where(Gateway.id == gateway_id).with_for_update())
    shards, activities, runs = sorted(set(shard_ids)), sorted(set(activity_run_ids)), sorted(set(run_ids))
    if not (shards or activities or runs):
        return
    wanted = []
    if shards:
        wanted.append(select(ActivityRun.run_id).join(Shard, Shard.activity_run_id == ActivityRun.id)
                      .where(Shard.id.in_(shards)))
    if activities:
        wanted.append(select(ActivityRun.run_id).where(ActivityRun.id.in_(activities)))
    ids = set(runs)
    for query in wanted:
        ids.update(session.scalars(query))
    session.scalars(select(Run).where(Run.id.in_(sorted(ids))).order_by(Run.id).with_for_update(of=Run)
                    .execution_options(populate_existing=True)).all()


def shard_figures(shard: Shard) -> ShardFigures:
    """What a shard counts for now; take it before changing the shard."""
    return ShardFigures(shard.status, int(shard.files or 0), int(shard.bytes or 0))


def shards_added(activity_run: ActivityRun, shards: list[Shard]) -> None:
    """Count newly planned shards (status ``planned``, no files yet)."""
    activity_run.shards_total = (activity_run.shards_total or 0) + len(shards)
    for shard in shards:
        if shard.files or shard.bytes or shard.status in (CLOUD_SUCCEEDED, CLOUD_FAILED):
            shard_changed(shard, ShardFigures("", 0, 0))


def shards_planned(activity_run: ActivityRun, count: int) -> None:
    """Count ``count`` shards newly planned with no files yet (inserted in bulk)."""
    activity_run.shards_total = (activity_run.shards_total or 0) + count


def shard_changed(shard: Shard, before: ShardFigures) -> None:
    """Apply what changed in ``shard`` since ``before`` to its activity run's and run's
    counters (in the caller's transaction; nothing if nothing counted changed)."""
    after = shard_figures(shard)
    if after == before:
        return
    activity_run = shard.activity_run
    run = activity_run.run
    files, size = after.files - before.files, after.bytes - before.bytes
    if files or size:
        activity_run.files_done = (activity_run.files_done or 0) + files
        activity_run.bytes_done = (activity_run.bytes_done or 0) + size
        run.files_done = (run.files_done or 0) + files
        run.bytes_done = (run.bytes_done or 0) + size
    if after.status == before.status:
        return
    if before.status == CLOUD_SUCCEEDED:
        activity_run.shards_succeeded -= 1
    if after.status == CLOUD_SUCCEEDED:
        activity_run.shards_succeeded = (activity_run.shards_succeeded or 0) + 1
    if after.status == CLOUD_FAILED:
        activity_run.shards_failed = (activity_run.shards_failed or 0) + 1
        first = activity_run.first_failed_index
        activity_run.first_failed_index = shard.index if first is None else min(first, shard.index)
    if before.status == CLOUD_FAILED:
        activity_run.shards_failed -= 1
        if activity_run.first_failed_index == shard.index:  # rare: a failed shard retried
            activity_run.first_failed_index = _lowest_failed(activity_run)


def _lowest_failed(activity_run: ActivityRun) -> int | None:
    session = object_session(activity_run)
    if session is None:
        failed = [s.index for s in activity_run.shards if s.status == CLOUD_FAILED]
        return min(failed) if failed else None
    return session.scalar(select(func.min(Shard.index)).where(  # autoflush: the shard's new status
        Shard.activity_run_id == activity_run.id, Shard.status == CLOUD_FAILED))


def activities_added(run: Run) -> None:
    """Count a new run's activity runs (all Queued)."""
    run.activities_total = len(run.activity_runs)
    for column in ACTIVITY_COLUMNS.values():
        setattr(run, column, 0)
    run.activities_queued = run.activities_total
    run.files_done = run.bytes_done = 0
    for activity_run in run.activity_runs:
        activity_run.shards_total = activity_run.shards_succeeded = activity_run.shards_failed = 0
        activity_run.files_done = activity_run.bytes_done = 0


def activity_status_changed(activity_run: ActivityRun, before: str) -> None:
    """Move the activity run from ``before`` to its status now in its run's counters."""
    if activity_run.status == before:
        return
    run = activity_run.run
    setattr(run, ACTIVITY_COLUMNS[before], getattr(run, ACTIVITY_COLUMNS[before]) - 1)
    column = ACTIVITY_COLUMNS[activity_run.status]
    setattr(run, column, getattr(run, column) + 1)
