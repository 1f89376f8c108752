"""How activity run and run statuses follow from their parts (pure rules).

- An activity run is Queued until claimed; Failed once the dispatcher failed it or
  any of its shards failed (with that shard's error); Succeeded once it is planned
  and every shard succeeded (a plan with no shard succeeds at once); else InProgress.
- A run is Queued while all its activity runs are; Succeeded/Failed once all of
  them ended (Failed if any failed); else InProgress.
"""

from __future__ import annotations

from dmg.cloud.models import FAILED, IN_PROGRESS, QUEUED, SUCCEEDED, ActivityRun, Run

TERMINAL = (SUCCEEDED, FAILED)


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
    if activity_run.failed_by_dispatcher:
        return FAILED, activity_run.error
    if activity_run.claim_epoch is None:
        return QUEUED, ""
    if not activity_run.planned:
        return IN_PROGRESS, ""
    shards = sorted(activity_run.shards, key=lambda s: s.index)
    failed = [s for s in shards if s.status == "failed"]
    if failed:
        first = failed[0]
        where = first.node or "a node"
        return FAILED, f"shard {first.index} failed on {where}: {first.error or 'no reason given'}"
    if all(s.status == "succeeded" for s in shards):
        return SUCCEEDED, ""
    return IN_PROGRESS, ""


def derive_run(run: Run, *, now: float) -> None:
    """Recompute ``status``, ``started_at`` and ``ended_at`` of a run in place."""
    statuses = [a.status for a in run.activity_runs]
    if all(s == QUEUED for s in statuses):
        status = QUEUED
    elif all(s in TERMINAL for s in statuses):
        status = FAILED if FAILED in statuses else SUCCEEDED
    else:
        status = IN_PROGRESS
    started = [a.started_at for a in run.activity_runs if a.started_at is not None]
    run.started_at = min(started) if started else None
    if status in TERMINAL:
        ended = [a.ended_at for a in run.activity_runs if a.ended_at is not None]
        run.ended_at = max(ended) if ended else now
    else:
        run.ended_at = None
    run.status = status
