"""Every attempt of a shard, recorded from the shard reports the site already sends.

No request is added for this: the dispatcher's ``placed`` report opens an attempt
(node, when it was placed, why it waited) and says why the previous one ended
(``previous_ended``, :mod:`dmg.attempt_ends`); the worker's ``running`` /
``succeeded`` / ``failed`` reports fill in the start, the progress and the end.

Rules (applied by :func:`record_report` inside the shard report's transaction):

- A report of attempt N closes every older attempt still open: ``fenced``, unless
  the ``placed`` report of N says why N-1 ended (node offline, worker died, ...);
  a later ``placed`` report still names the reason of an attempt closed ``fenced``.
- Trust: a node reports only its own work. A ``placed`` report is accepted only from
  the gateway's current dispatcher at the cloud (:mod:`.leader`, checked by the
  caller) and names a node of the gateway; it never moves an attempt that a node
  already reported as its own. A ``running``/``succeeded``/``failed`` report (and a
  batch of file results) is accepted only from the node that attempt was placed on
  (:func:`check_worker`): the reporting node is the token's, a body naming another
  node is refused (PermissionDenied; nothing is recorded), and a report of an attempt
  whose placement the cloud has not heard of yet is answered Retryable (the
  dispatcher's ``placed`` report travels on its own thread and may come second).
- A user's cancel closes the open attempts of the cancelled activity runs
  ``cancelled`` (:func:`close_cancelled`); an attempt's own final report still wins
  (it may have committed before it heard of the cancel).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from dmg.attempt_ends import CANCELLED, CANCELLED_REASON, FAILED, FENCED, REPLACED, SUCCEEDED
from dmg.cloud.models import ActivityRun, Run, Shard, ShardAttempt
from dmg.cloud.schemas import ShardReport
from dmg.cloud.service.gateways import NodeIdentity
from dmg.errors import NotFound, PermissionDenied, Retryable
from dmg.shards.status import CLOUD_FAILED, CLOUD_PLACED, CLOUD_RUNNING, CLOUD_SUCCEEDED

_FINAL = {CLOUD_SUCCEEDED: SUCCEEDED, CLOUD_FAILED: FAILED}


def record_report(session: Session, shard: Shard, report: ShardReport, node: NodeIdentity, *,
                  now: float) -> None:
    """Record ``report`` (not stale) in its attempt, closing older open ones; one query.
    PermissionDenied, and nothing recorded, when ``node`` reports work not its own."""
    known = _preloaded(session, shard.id)
    if known is None:
        rows = {r.attempt: r for r in session.scalars(
            select(ShardAttempt).where(ShardAttempt.shard_id == shard.id,
                                       ShardAttempt.attempt <= report.attempt))}
    else:
        rows = {attempt: r for attempt, r in known.items() if attempt <= report.attempt}
    row = rows.get(report.attempt)
    _check_reporter(shard.id, report, node, row)
    if row is None:
        row = ShardAttempt(**new_row(shard.activity_run_id, shard.id, report))
        deferred: list[ShardAttempt] | None = session.info.get(_DEFERRED)
        if deferred is None:
            session.add(row)
        else:  # written with the batch's others by write_deferred
            deferred.append(row)
        if known is not None:
            known[report.attempt] = row
    apply_report(row, rows.values(), report, node, cancelled=shard.activity_run.cancelled_at is not None,
                 now=now)


def new_row(activity_run_id: str, shard_id: str, report: ShardReport) -> dict[str, Any]:
    """The columns of a new attempt row, before ``report`` is applied to it."""
    return {"activity_run_id": activity_run_id, "shard_id": shard_id, "attempt": report.attempt, "node": "",
            "status": report.status, "outcome": "", "error": "", "wait_reason": "", "files": 0, "bytes": 0,
            "placed_at": None, "started_at": None, "ended_at": None}


def apply_report(row: Any, older: Iterable[Any], report: ShardReport, node: NodeIdentity, *, cancelled: bool,
                 now: float) -> None:
    """Apply ``report`` (checked) to its attempt's ``row`` and close the ``older`` open ones
    (rows of its shard: ORM objects or anything with the columns as attributes).
    ``cancelled``: the shard's activity run was cancelled by a user."""
    for other in older:
        if other.attempt < report.attempt:
            _close(other, report, now=now)
    if report.status == CLOUD_PLACED:
        if not row.node or row.status == CLOUD_PLACED:
            row.node = report.node or node.node  # the caller checked it is a node of the gateway
        row.placed_at = report.placed_at if report.placed_at is not None else (row.placed_at or now)
        if report.wait_reason is not None:
            row.wait_reason = report.wait_reason
        return
    row.node = node.node
    if _RANK[report.status] >= _RANK.get(row.status, 0):
        row.status = report.status
    if report.files is not None:
        row.files = report.files
    if report.bytes is not None:
        row.bytes = report.bytes
    if report.started_at is not None:
        row.started_at = report.started_at
    elif row.started_at is None:
        row.started_at = now
    if report.status in _FINAL and row.outcome not in REPLACED:
        cancelled = report.status == CLOUD_FAILED and (report.error == CANCELLED_REASON or cancelled)
        row.outcome = CANCELLED if cancelled else _FINAL[report.status]
        row.error = report.error or ""
        row.ended_at = report.ended_at if report.ended_at is not None else now


_RANK = {CLOUD_PLACED: 0, CLOUD_RUNNING: 1, CLOUD_SUCCEEDED: 2, CLOUD_FAILED: 2}


def _check_reporter(shard_id: str, report: ShardReport, node: NodeIdentity, row: Any) -> None:
    """PermissionDenied when ``node`` reports work that is not its own (see the module docstring)."""
    if report.status == CLOUD_PLACED:
        return
    check_worker(shard_id, report.attempt, node, row, named=report.node)


def check_worker(shard_id: str, attempt: int, node: NodeIdentity, row: Any, *, named: str | None) -> None:
    """The rule for a worker's report of ``attempt`` of shard ``shard_id``: ``node`` (the
    token's) is the node the attempt was placed on (``row``: the attempt's row, None when
    the cloud has none). PermissionDenied when the body names another node or the attempt
    is another node's; Retryable when the cloud has no placement of it yet."""
    if named and named != node.node:
        raise PermissionDenied(f"node {node.node!r} cannot report for node {named!r}",
                               hint="a node reports only its own attempts; the cloud takes the node "
                                    "from the token")
    if row is None or not row.node:
        raise Retryable(f"attempt {attempt} of shard {shard_id!r} has no placement at the cloud yet",
                        hint="the dispatcher's placement report comes first; send again")
    if row.node != node.node:
        raise PermissionDenied(f"attempt {attempt} of shard {shard_id!r} was not placed on node "
                               f"{node.node!r}", hint="a node reports only its own attempts")


_PRELOADED = "dmg_attempts"
_DEFERRED = "dmg_new_attempts"
COLUMNS = ("activity_run_id", "shard_id", "attempt", "node", "status", "outcome", "error", "wait_reason",
           "files", "bytes", "placed_at", "started_at", "ended_at")


def defer_new(session: Session) -> None:
    """From now on in this transaction, keep new attempt rows out of the session and write
    them in one executemany INSERT with :func:`write_deferred` (the ORM inserts rows with
    a database-made id one statement each on SQLite, SQLAlchemy 2.0, to read each id back;
    nothing here needs the ids)."""
    session.info[_DEFERRED] = []


def write_deferred(session: Session) -> int:
    """INSERT the rows :func:`record_report` kept (as they are now) -> their number."""
    rows: list[ShardAttempt] = session.info.pop(_DEFERRED, None) or []
    if rows:
        session.execute(insert(ShardAttempt),
                        [{name: getattr(row, name) for name in COLUMNS} for row in rows])
    return len(rows)


def preload(session: Session, shard_ids: list[str]) -> None:
    """Read every attempt of these shards in one statement, for the reports of a batch
    (:func:`record_report` and :func:`attempt_row` use them instead of a query each)."""
    known: dict[str, dict[int, ShardAttempt]] = {shard_id: {} for shard_id in shard_ids}
    if shard_ids:
        for row in session.scalars(select(ShardAttempt).where(ShardAttempt.shard_id.in_(shard_ids))):
            known[row.shard_id][row.attempt] = row
    session.info[_PRELOADED] = known


def forget(session: Session) -> None:
    """Drop what :func:`preload` read (a savepoint rolled back: its rows may be gone)."""
    session.info.pop(_PRELOADED, None)


def _preloaded(session: Session, shard_id: str) -> dict[int, ShardAttempt] | None:
    known: dict[str, dict[int, ShardAttempt]] | None = session.info.get(_PRELOADED)
    return None if known is None else known.get(shard_id)


def attempt_row(session: Session, shard: Shard, attempt: int) -> ShardAttempt | None:
    known = _preloaded(session, shard.id)
    if known is not None:
        return known.get(attempt)
    return session.scalar(select(ShardAttempt).where(ShardAttempt.shard_id == shard.id,
                                                     ShardAttempt.attempt == attempt))


def _close(row: Any, report: ShardReport, *, now: float) -> None:
    """End an attempt older than ``report``'s: as the placement report says, else ``fenced``."""
    told = (report.status == CLOUD_PLACED and report.previous_ended is not None
            and row.attempt == report.attempt - 1)
    if row.outcome and not (told and row.outcome == FENCED):
        return  # it ended on its own, or its reason is known already
    row.outcome = report.previous_ended if told and report.previous_ended else FENCED
    if told and report.previous_ended_at is not None:
        row.ended_at = report.previous_ended_at
    elif row.ended_at is None:
        row.ended_at = now


def close_cancelled(session: Session, activity_run_ids: list[str], *, now: float) -> None:
    """End ``cancelled`` every open attempt of these activity runs (a user cancelled them)."""
    if not activity_run_ids:
        return
    for row in session.scalars(select(ShardAttempt).where(ShardAttempt.activity_run_id.in_(activity_run_ids),
                                                          ShardAttempt.outcome == "")):
        row.outcome = CANCELLED
        row.ended_at = now


def attempt_json(row: ShardAttempt, shard: Shard, activity_run: ActivityRun) -> dict[str, Any]:
    waited = (row.started_at - row.placed_at) if row.started_at is not None and row.placed_at is not None \
        else None
    ran = (row.ended_at - row.started_at) if row.ended_at is not None and row.started_at is not None \
        else None
    return {
        "run_id": activity_run.run_id, "activity_run_id": activity_run.id, "activity": activity_run.name,
        "shard_id": shard.id, "shard_index": shard.index, "attempt": row.attempt, "node": row.node,
        "status": row.status, "outcome": row.outcome, "ended": row.outcome or "", "error": row.error,
        "wait_reason": row.wait_reason, "files": row.files, "bytes": row.bytes,
        "placed_at": row.placed_at, "started_at": row.started_at, "ended_at": row.ended_at,
        "waited": waited, "duration": ran, "current": row.attempt == shard.attempt,
    }


def run_attempts(session: Session, run_id: str) -> list[dict[str, Any]]:
    """Every attempt of every shard of run ``run_id``: by activity, shard index, attempt.
    NotFound for an unknown run."""
    if session.get(Run, run_id) is None:
        raise NotFound(f"run {run_id!r} does not exist", hint="list runs with `dmg runs list`")
    rows = session.execute(
        select(ShardAttempt, Shard, ActivityRun)
        .join(Shard, Shard.id == ShardAttempt.shard_id)
        .join(ActivityRun, ActivityRun.id == ShardAttempt.activity_run_id)
        .where(ActivityRun.run_id == run_id)
        .order_by(ActivityRun.position, Shard.index, ShardAttempt.attempt))
    return [attempt_json(a, s, r) for a, s, r in rows]


def shard_attempts(session: Session, shard_id: str) -> list[dict[str, Any]]:
    """Every attempt of shard ``shard_id``, oldest first. NotFound for an unknown shard."""
    shard = session.get(Shard, shard_id)
    if shard is None:
        raise NotFound(f"shard {shard_id!r} does not exist",
                       hint="`dmg runs show RUN --json` lists the ids of a run's shards")
    rows = session.scalars(select(ShardAttempt).where(ShardAttempt.shard_id == shard_id)
                           .order_by(ShardAttempt.attempt))
    return [attempt_json(a, shard, shard.activity_run) for a in rows]
