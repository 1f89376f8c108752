"""Run and activity-run counters, changed by atomic increments at the end of the
transaction that changes a shard or an activity run, so statuses follow from them
without aggregate queries and without holding a run's row for the transaction's work.

An activity run counts its shards (``shards_total``, ``shards_succeeded``,
``shards_failed``, the lowest failed shard's ``first_failed_index``) and the files and
bytes its shards report (``files_done``, ``bytes_done``: the current attempts'
figures). A run counts its activity runs by status (``activities_<status>``) and sums
their files and bytes.

A writer records *what changed* while it works (nothing is written then):

- :func:`shards_planned` when shards are planned;
- :func:`shard_changed` after a report changed a shard (give it the
  :func:`shard_figures` taken before);
- :func:`derive_later` for an activity run whose status may have moved (claimed,
  planned, failed by the dispatcher, cancelled).

:func:`settle` then applies it in a few short statements: one ``UPDATE activity_runs
SET n = n + :d ... RETURNING`` per activity run touched, in id order, the activity
run's status derived from what the statement returned (the database's latest value,
not what this transaction read), then the same for the runs, in id order. It runs
when the transaction commits (a ``before_commit`` hook), or earlier when the caller
answers with the derived status. On PostgreSQL a counter's row is locked only from
its increment to the commit (milliseconds): two reports through two workers that end
an activity run's last shards both increment, and the second one's ``RETURNING``
sees both, so exactly one of them derives Succeeded; the locks are taken shards
first (a batch locks its shards in id order, :func:`lock_shards`), then activity
runs, then runs, each in id order, so writers never deadlock on counters.

A savepoint that rolls back must drop what it recorded: :func:`snapshot` and
:func:`restore` (:mod:`.batches`).

``tests/cloud/test_counters.py`` checks the counters against the aggregates after a
run with failures, retries and a cancel.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from sqlalchemy import Integer, Table, bindparam, case, event, func, select, update
from sqlalchemy.orm import Session, joinedload

from dmg.cloud.models import (
    CANCELLED,
    FAILED,
    IN_PROGRESS,
    QUEUED,
    SUCCEEDED,
    ActivityRun,
    Run,
    Shard,
)
from dmg.shards.status import CLOUD_FAILED, CLOUD_SUCCEEDED

#: The run column counting activity runs of each status.
ACTIVITY_COLUMNS = {QUEUED: "activities_queued", IN_PROGRESS: "activities_in_progress",
                    SUCCEEDED: "activities_succeeded", FAILED: "activities_failed",
                    CANCELLED: "activities_cancelled"}

_KEY = "dmg_counters"


class ShardFigures(NamedTuple):
    status: str
    files: int
    bytes: int


@dataclass
class _ActivityDelta:
    run_id: str
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    files: int = 0
    bytes: int = 0
    failed_index: int | None = None  # the lowest newly failed shard
    recount_failed: bool = False  # a failed shard was retried: read the lowest again
    planned_epoch: int | None = None  # planned by this cloud epoch: set planned and claim_epoch


@dataclass
class _Pending:
    now: float = 0.0
    activities: dict[str, _ActivityDelta] = field(default_factory=dict)
    runs: dict[str, dict[str, int]] = field(default_factory=dict)


def _pending(session: Session, now: float | None = None) -> _Pending:
    pending: _Pending | None = session.info.get(_KEY)
    if pending is None:
        pending = session.info[_KEY] = _Pending()
    if now is not None:
        pending.now = max(pending.now, now)
    return pending


def _activity(session: Session, activity_run_id: str, run_id: str, now: float | None) -> _ActivityDelta:
    pending = _pending(session, now)
    delta = pending.activities.get(activity_run_id)
    if delta is None:
        delta = pending.activities[activity_run_id] = _ActivityDelta(run_id)
    return delta


def snapshot(session: Session) -> _Pending | None:
    """What is recorded so far (to :func:`restore` when a savepoint rolls back)."""
    pending = session.info.get(_KEY)
    return copy.deepcopy(pending) if pending is not None else None


def restore(session: Session, saved: _Pending | None) -> None:
    if saved is None:
        session.info.pop(_KEY, None)
    else:
        session.info[_KEY] = saved


def lock_shards(session: Session, shard_ids: Iterable[str]) -> dict[str, Shard]:
    """Read these shards in one statement (PostgreSQL: ``FOR NO KEY UPDATE``, in id order, so two
    reports of one shard — a batch sent again while the first is still applied — queue
    instead of counting it twice) -> {id: shard}; the session keeps them for the items."""
    ids = sorted(set(shard_ids))
    if not ids:
        return {}
    query = (select(Shard).where(Shard.id.in_(ids)).order_by(Shard.id)
             .options(joinedload(Shard.activity_run)))  # read by every item: in the same statement
    if session.get_bind().dialect.name == "postgresql":
        # NO KEY UPDATE: the FOREIGN KEY checks of other transactions' attempt and file-result
        # rows (FOR KEY SHARE) do not wait on it; FOR UPDATE made them deadlock under 2 workers
        query = query.with_for_update(of=Shard, key_share=True).execution_options(populate_existing=True)
    return {shard.id: shard for shard in session.scalars(query).unique()}


def lock_activity_run(session: Session, activity_run_id: str) -> ActivityRun | None:
    """The activity run read afresh (PostgreSQL: ``FOR UPDATE``): a plan or a failure
    checks its claim epoch against a concurrent claim's."""
    query = select(ActivityRun).where(ActivityRun.id == activity_run_id)
    if session.get_bind().dialect.name == "postgresql":  # NO KEY: file results' FK checks pass
        query = query.with_for_update(of=ActivityRun, key_share=True)
    return session.scalars(query.execution_options(populate_existing=True)).first()


#: The columns a plan reads of its activity run (:func:`lock_activity_run_rows`).
PLAN_COLUMNS = ("id", "run_id", "gateway_id", "claim_epoch", "claimed_at", "planned",
                "failed_by_dispatcher", "error")


def lock_activity_run_rows(session: Session, ids: list[str]) -> dict[str, Any]:
    """These activity runs read afresh in one statement (PostgreSQL: ``FOR NO KEY UPDATE``, in
    id order), as :func:`lock_activity_run` reads one, as plain rows of :data:`PLAN_COLUMNS`:
    no ORM object per activity run (they cost a batch of 10 plans about 1 ms) -> {id: row}."""
    table = ActivityRun.__table__
    query = (select(*(table.c[name] for name in PLAN_COLUMNS)).where(table.c.id.in_(sorted(ids)))
             .order_by(table.c.id))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(key_share=True)
    return {row.id: row for row in session.execute(query)}


def lock_activity_runs(session: Session, run_id: str) -> list[ActivityRun]:
    """A run's activity runs read afresh (PostgreSQL: ``FOR UPDATE``, in id order): a cancel
    must not turn one that a concurrent report just ended into Cancelled."""
    query = select(ActivityRun).where(ActivityRun.run_id == run_id).order_by(ActivityRun.id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=ActivityRun, key_share=True)
    return list(session.scalars(query.execution_options(populate_existing=True)))


def shard_figures(shard: Shard) -> ShardFigures:
    """What a shard counts for now; take it before changing the shard."""
    return ShardFigures(shard.status, int(shard.files or 0), int(shard.bytes or 0))


def shards_planned(session: Session, activity_run: ActivityRun | Any, count: int, *, now: float,
                   epoch: int) -> None:
    """Count ``count`` shards newly planned with no files yet, mark the activity run planned
    by cloud epoch ``epoch`` (in the same UPDATE); derive the status later."""
    delta = _activity(session, activity_run.id, activity_run.run_id, now)
    delta.total += count
    delta.planned_epoch = epoch


def derive_later(session: Session, activity_run: ActivityRun, *, now: float) -> None:
    """Derive the activity run's status (and its run's) in :func:`settle`."""
    _activity(session, activity_run.id, activity_run.run_id, now)


def shard_changed(session: Session, shard: Shard, before: ShardFigures, *, now: float) -> None:
    """Record what changed in ``shard`` since ``before`` for its activity run's and run's
    counters (applied by :func:`settle`; nothing if nothing counted changed)."""
    shard_moved(session, shard.activity_run_id, shard.activity_run.run_id, shard.index, before,
                shard_figures(shard), now=now)


def shard_moved(session: Session, activity_run_id: str, run_id: str, index: int, before: ShardFigures,
                after: ShardFigures, *, now: float) -> None:
    """:func:`shard_changed` given the shard's ids, its index and its figures before and after
    (the batches' Core path, :mod:`.reportcore`, has rows, not ORM objects)."""
    counted = (CLOUD_SUCCEEDED, CLOUD_FAILED)
    if after.files == before.files and after.bytes == before.bytes and (
            after.status == before.status or (after.status not in counted and before.status not in counted)):
        return  # "placed" -> "running" and the like: no counter moves, no status can
    delta = _activity(session, activity_run_id, run_id, now)
    delta.files += after.files - before.files
    delta.bytes += after.bytes - before.bytes
    if after.status == before.status:
        return
    if before.status == CLOUD_SUCCEEDED:
        delta.succeeded -= 1
    if after.status == CLOUD_SUCCEEDED:
        delta.succeeded += 1
    if after.status == CLOUD_FAILED:
        delta.failed += 1
        lowest = delta.failed_index
        delta.failed_index = index if lowest is None else min(lowest, index)
    if before.status == CLOUD_FAILED:
        delta.failed -= 1
        delta.recount_failed = True  # rare: a failed shard retried


def derive_later_id(session: Session, activity_run_id: str, run_id: str, *, now: float) -> None:
    """:func:`derive_later` given the activity run's and its run's ids."""
    _activity(session, activity_run_id, run_id, now)


def activities_added(run: dict[str, Any], activity_runs: list[dict[str, Any]]) -> None:
    """Count a new run's activity runs (all Queued), in the rows about to be inserted."""
    run.update(dict.fromkeys(ACTIVITY_COLUMNS.values(), 0), activities_total=len(activity_runs),
               activities_queued=len(activity_runs), files_done=0, bytes_done=0)
    for activity_run in activity_runs:
        activity_run.update(shards_total=0, shards_succeeded=0, shards_failed=0, first_failed_index=None,
                            files_done=0, bytes_done=0)


def activity_status_changed(activity_run: ActivityRun, before: str, *, now: float | None = None) -> None:
    """Record the activity run's move from ``before`` to its status now for its run."""
    if activity_run.status == before:
        return
    session = Session.object_session(activity_run)
    assert session is not None
    _status_moved(_pending(session, now), activity_run.run_id, before, activity_run.status)


def _status_moved(pending: _Pending, run_id: str, before: str, after: str) -> None:
    moves = pending.runs.setdefault(run_id, {})
    moves[ACTIVITY_COLUMNS[before]] = moves.get(ACTIVITY_COLUMNS[before], 0) - 1
    moves[ACTIVITY_COLUMNS[after]] = moves.get(ACTIVITY_COLUMNS[after], 0) + 1


def runs_claimed(session: Session, taken: dict[str, int], *, now: float,
                 activity_runs: Iterable[str] = ()) -> None:
    """The claim's case of :func:`settle`, in one statement per run: ``taken`` {run id: how
    many of its activity runs this transaction moved Queued -> InProgress (the claim's
    conditional UPDATE set their own status)}. Nothing else may be recorded for them.

    A run with an activity run in progress is InProgress whatever its other counters say
    (:func:`.derive.run_outcome`), and one whose every activity run was Queued has no start
    yet: its first start is this claim's ``now`` (the claimed ones' ``started_at``). So
    ``UPDATE runs SET activities_queued = activities_queued - n, activities_in_progress =
    activities_in_progress + n, status = 'InProgress', started_at = COALESCE(started_at, now),
    ended_at = NULL RETURNING`` the counters: the run was Queued before exactly when its
    queued count was its total (then its status change is announced). ``settle``'s general
    path took three statements and a flush here, about a third of the claim's CPU.
    ``activity_runs``: the ids of the activity runs the claim changed (with Core statements):
    the session's ORM objects of them are expired too."""
    claimed = set(activity_runs)
    if not taken:
        _expire(session, claimed, set())
        return
    from dmg.cloud.service.derive import announce  # derive uses this module

    connection = session.connection()  # a Core statement: no ORM execution path
    for run_id in sorted(taken):  # runs after the activity runs, each in id order (lock order)
        n = taken[run_id]
        row = connection.execute(_RUN_CLAIMED, {"b_id": run_id, "n": n, "now": now}).first()
        if row is not None and row.activities_queued + n == row.activities_total:
            announce(session, run_id)  # it was Queued
    _expire(session, claimed, set(taken))


def settle(session: Session) -> None:
    """Apply what was recorded (see the module docstring); idempotent, cheap when nothing is.
    Core statements and plain rows, no ORM object: an ORM activity run or run of the session
    that it changed is expired (read again when next used)."""
    pending: _Pending | None = session.info.pop(_KEY, None)
    if pending is None or not (pending.activities or pending.runs):
        return
    from dmg.cloud.service.derive import activity_outcome, announce, run_outcome  # derive uses this module

    session.flush()
    now = pending.now
    run_files: dict[str, list[int]] = {}
    changed: list[dict[str, Any]] = []
    for row in _increment_activity_runs(session, pending.activities):
        delta = pending.activities[row.id]
        if delta.files or delta.bytes:
            figures = run_files.setdefault(row.run_id, [0, 0])
            figures[0] += delta.files
            figures[1] += delta.bytes
        status, error, ended_at = activity_outcome(session, row, now=now)
        if (status, error, ended_at) != (row.status, row.error, row.ended_at):
            changed.append({"b_id": row.id, "status": status, "error": error, "ended_at": ended_at})
        if status != row.status:
            _status_moved(pending, row.run_id, row.status, status)
        pending.runs.setdefault(row.run_id, {})
    if changed:
        session.execute(_ACTIVITY_OUTCOME, changed)
    for run_id in sorted(pending.runs):
        values = {f"d_{column}": value for column, value in pending.runs[run_id].items() if value}
        files, size = run_files.get(run_id, (0, 0))
        if files:
            values["d_files_done"] = files
        if size:
            values["d_bytes_done"] = size
        if not values:
            continue
        run = session.execute(_run_increment(tuple(sorted(values))), {"b_id": run_id, **values}).first()
        if run is None or not any(key.startswith("d_activities_") for key in values):
            continue
        status, started_at, ended_at = run_outcome(session, run, now=now)
        if (status, started_at, ended_at) != (run.status, run.started_at, run.ended_at):
            session.execute(_RUN_OUTCOME, {"b_id": run_id, "status": status, "started_at": started_at,
                                           "ended_at": ended_at})
        if status != run.status:
            announce(session, run_id)
    _expire(session, set(pending.activities), set(pending.runs))
    session.info.pop(_KEY, None)


def _expire(session: Session, activity_run_ids: set[str], run_ids: set[str]) -> None:
    """Expire the session's ORM activity runs and runs that :func:`settle` changed in the
    database behind its back (a caller reads them after: the plan's answer, a cancel's)."""
    # By the identity key, not ``instance.id``: reading an expired instance's id loads it.
    for key in list(session.identity_map.keys()):
        model, ident = key[0], key[1]
        if (model is ActivityRun and ident[0] in activity_run_ids) or (model is Run and ident[0] in run_ids):
            instance = session.identity_map.get(key)
            if instance is not None:
                session.expire(instance)


def _outcome_statement(model: Any, columns: tuple[str, ...]) -> Any:
    table = cast(Table, model.__table__)
    return update(table).where(table.c.id == bindparam("b_id")).values(
        {column: bindparam(column, type_=table.c[column].type) for column in columns})


_RUN_INCREMENTS: dict[tuple[str, ...], Any] = {}


def _run_increment(keys: tuple[str, ...]) -> Any:
    """``UPDATE runs SET n = n + :d_n ... WHERE id = :b_id RETURNING ...`` for these
    parameter names, built once."""
    statement = _RUN_INCREMENTS.get(keys)
    if statement is None:
        table = cast(Table, Run.__table__)
        values = {key[2:]: table.c[key[2:]] + bindparam(key, type_=table.c[key[2:]].type) for key in keys}
        statement = _RUN_INCREMENTS[keys] = (update(table).where(table.c.id == bindparam("b_id"))
                                             .values(values).returning(*_RUN_READ))
    return statement


_ACTIVITY_READ = tuple(cast(Table, ActivityRun.__table__).c[name] for name in (
    "id", "run_id", "status", "error", "ended_at", "cancelled_at", "failed_by_dispatcher", "claim_epoch",
    "planned", "first_failed_index", "shards_total", "shards_succeeded"))
_RUN_READ = tuple(cast(Table, Run.__table__).c[name] for name in (
    "id", "status", "started_at", "ended_at", *ACTIVITY_COLUMNS.values(), "activities_total"))
_ACTIVITY_OUTCOME = _outcome_statement(ActivityRun, ("status", "error", "ended_at"))
_RUN_OUTCOME = _outcome_statement(Run, ("status", "started_at", "ended_at"))
_RUNS = cast(Table, Run.__table__)
_RUN_CLAIMED = (update(_RUNS).where(_RUNS.c.id == bindparam("b_id")).values(
    activities_queued=_RUNS.c.activities_queued - bindparam("n", type_=Integer),
    activities_in_progress=_RUNS.c.activities_in_progress + bindparam("n", type_=Integer),
    status=IN_PROGRESS,
    started_at=func.coalesce(_RUNS.c.started_at, bindparam("now", type_=_RUNS.c.started_at.type)),
    ended_at=None).returning(_RUNS.c.activities_queued, _RUNS.c.activities_total))
_ACTIVITY_READ_BY_ID = (select(*_ACTIVITY_READ).where(ActivityRun.id.in_(bindparam("ids", expanding=True)))
                        .order_by(ActivityRun.id))


_COUNTED = (("shards_total", "total"), ("shards_succeeded", "succeeded"), ("shards_failed", "failed"),
            ("files_done", "files"), ("bytes_done", "bytes"))


def _increment_activity_runs(session: Session, deltas: dict[str, _ActivityDelta]) -> list[Any]:
    """Apply the activity runs' deltas and read them back as the database has them now:
    the increments as one executemany per kind of change (the same columns), in id order
    (PostgreSQL: each row stays locked by this transaction until the commit, so the
    read-back that follows sees every committed increment and this one's, and nobody
    changes them in between), then one SELECT of them all (the columns statuses follow
    from). -> the activity runs still there (rows), in id order."""
    if not deltas:
        return []
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    recount: list[str] = []
    for activity_run_id in sorted(deltas):
        delta = deltas[activity_run_id]
        row: dict[str, Any] = {"b_id": activity_run_id}
        for column, name in _COUNTED:
            value = getattr(delta, name)
            if value:
                row[f"d_{column}"] = value
        if delta.recount_failed:
            recount.append(activity_run_id)
        elif delta.failed_index is not None:
            row["d_failed_index"] = delta.failed_index
        if delta.planned_epoch is not None:
            row["d_epoch"] = delta.planned_epoch
        groups.setdefault(tuple(sorted(row)), []).append(row)
    for keys, rows in groups.items():
        session.execute(_increment_statement(keys), rows)
    if recount:  # rare: a failed shard retried; read the lowest failed index again
        session.execute(update(ActivityRun).where(ActivityRun.id.in_(recount)).values(
            first_failed_index=select(func.min(Shard.index)).where(
                Shard.activity_run_id == ActivityRun.id, Shard.status == CLOUD_FAILED).scalar_subquery())
            .execution_options(synchronize_session=False))
    return list(session.execute(_ACTIVITY_READ_BY_ID, {"ids": sorted(deltas)}))


_STATEMENTS: dict[tuple[str, ...], Any] = {}


def _increment_statement(keys: tuple[str, ...]) -> Any:
    """``UPDATE activity_runs SET n = n + :d_n ... WHERE id = :b_id`` for these parameter
    names, built once (its compiled form is cached by SQLAlchemy)."""
    statement = _STATEMENTS.get(keys)
    if statement is not None:
        return statement
    table = cast(Table, ActivityRun.__table__)
    values: dict[str, Any] = {}
    for key in keys:
        if key == "d_failed_index":
            first = table.c.first_failed_index
            index = bindparam("d_failed_index", type_=Integer)
            values["first_failed_index"] = case((first.is_(None), index), (first > index, index), else_=first)
        elif key == "d_epoch":
            values["planned"] = True
            values["claim_epoch"] = bindparam("d_epoch", type_=Integer)
        elif key.startswith("d_"):
            column = key[2:]
            values[column] = table.c[column] + bindparam(key, type_=table.c[column].type)
    if not values:  # status only: lock the row all the same (a concurrent increment derives too)
        values["shards_total"] = table.c.shards_total
    statement = _STATEMENTS[keys] = update(table).where(table.c.id == bindparam("b_id")).values(**values)
    return statement


@event.listens_for(Session, "before_commit")
def _settle_before_commit(session: Session) -> None:
    if session.info.get(_KEY) is not None:
        settle(session)
