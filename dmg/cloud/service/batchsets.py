"""A report batch applied as a set: a fixed handful of statements, whatever its size.

:func:`apply_regular` applies a batch of :mod:`.batches` whose every item the cloud
takes (the common case) with statements for the whole batch instead of one or more per
item: its shards read (and on PostgreSQL locked, in id order) in one SELECT, its plans in
three (the activity runs read and locked, their known shard ids, one executemany INSERT
of every new shard row), the attempts of its shards in one, and at its end one flush in
which the ORM groups the shard and attempt changes into an executemany per kind of
change, one executemany upsert of every file result, and the counters' few statements
(:mod:`.counters`). No savepoint per item.

It gives exactly what :func:`.batches.apply_batch` gives for such a batch. A worker's
item refused or told to wait (``retry``) is answered as item by item: its checks all
come before it writes anything, so there is nothing to roll back (its file rows are
dropped from the batch's). Otherwise it raises :class:`Irregular` and its caller rolls
the transaction back and applies the batch item by item (:func:`.batches.apply_batch`,
one savepoint per item): when a plan or a placement is refused or must wait, an item is relayed for a
removed node, a report comes before its shard's plan in the batch, or an activity run
is planned twice in it. The checks, the fencing (the dispatcher's epoch, the attempt
placed on the reporting node) and the lock order (shards, the gateway's lease row,
activity runs, runs) are the same functions and the same order as item by item.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy.orm import Session, joinedload

from dmg.cloud.models import Shard
from dmg.cloud.schemas import ActivityPlan, ReportItem
from dmg.cloud.service import attempts, counters, dispatch, files
from dmg.cloud.service.gateways import NodeIdentity
from dmg.errors import DmgError, Retryable
from dmg.shards.status import CLOUD_PLACED

#: Shard ids of the batch's plans, at most, to check in one statement (SQLite's limit on
#: a statement's parameters is 32,766); a larger batch goes item by item.
MAX_PLANNED_IDS = 5_000


class Irregular(Exception):
    """The batch must be applied item by item (see the module docstring)."""


def apply_regular(session: Session, node: NodeIdentity, items: list[ReportItem], *, now: float,
                  ttl: float) -> dict[str, Any]:
    """-> the answer :func:`.batches.apply_batch` gives this batch; Irregular (roll the
    transaction back, go item by item) when this module does not apply it."""
    plans = [item.plan for item in items if item.plan is not None]
    _check_regular(items, plans)
    report_ids = sorted({item.shard_id for item in items if item.plan is None})
    shards = counters.lock_shards(session, report_ids)  # shards first: the lock order
    checked: set[Any] = set()  # the dispatcher's epoch and nodes, checked once a batch
    if plans:
        _apply_plans(session, node, plans, checked, now=now, ttl=ttl)
        new = [shard_id for shard_id in report_ids if shard_id not in shards]
        if new:  # shards this batch planned (its own rows), or unknown (refused below)
            shards.update((shard.id, shard) for shard in session.scalars(
                select(Shard).where(Shard.id.in_(new)).options(joinedload(Shard.activity_run))).unique())
    attempts.preload(session, list(shards))
    attempts.defer_new(session)
    results: list[dict[str, Any]] = []
    retry: dict[str, Any] | None = None
    waiting: dict[str, dict[str, Any]] = {}  # shard id -> the retry error its earlier item got
    for item in items:
        if item.plan is not None:
            results.append({"shard_id": "", "activity_run_id": item.plan.activity_run_id, "ok": True})
            continue
        if item.shard_id in waiting:  # an earlier report of this shard waits: so does this one
            results.append({"shard_id": item.shard_id, "ok": False, "retry": True, **waiting[item.shard_id]})
            continue
        kept = len(session.info.get(files.DEFERRED, ()))
        out: dict[str, Any] = {}
        try:
            if item.files is not None:
                out.update(files.record_file_results(session, node, item.shard_id, item.files, now=now,
                                                     defer=True))
            if item.report is not None:
                out.update(dispatch.report_shard(session, node, item.shard_id, item.report, now=now,
                                                 ttl=ttl, checked=checked))
        except DmgError as exc:
            if item.report is not None and item.report.status == CLOUD_PLACED:
                raise Irregular(f"placement of shard {item.shard_id!r}: {exc}") from exc
            # A worker's item is refused by checks made before it writes anything (the
            # shard, its attempt, the reporting node): only its file rows are to drop.
            del session.info.get(files.DEFERRED, [])[kept:]
            error = exc.to_json()
            if isinstance(exc, Retryable):
                waiting[item.shard_id] = error
                retry = retry or error
                results.append({"shard_id": item.shard_id, "ok": False, "retry": True, **error})
            else:
                results.append({"shard_id": item.shard_id, "ok": False, **error})
            continue
        results.append({"shard_id": item.shard_id, "ok": True, **out})
    attempts.write_deferred(session)
    files.write_deferred(session)
    return {"applied": len(results), "results": results, "retry": retry}


def _check_regular(items: list[ReportItem], plans: list[ActivityPlan]) -> None:
    """Irregular for a batch this module does not apply (see the module docstring)."""
    if any(item.relayed_for is not None for item in items):
        raise Irregular("an item relayed for a removed node")
    if len({plan.activity_run_id for plan in plans}) != len(plans):
        raise Irregular("an activity run planned twice")
    planned_at: dict[str, int] = {}
    for position, item in enumerate(items):
        if item.plan is not None:
            for shard in item.plan.shards:
                if shard.id in planned_at:
                    raise Irregular("a shard id in two plans")
                planned_at[shard.id] = position
    if len(planned_at) > MAX_PLANNED_IDS:
        raise Irregular("too many planned shards for one statement")
    for position, item in enumerate(items):
        if item.plan is None and planned_at.get(item.shard_id, -1) > position:
            raise Irregular("a report before its shard's plan")


def _apply_plans(session: Session, node: NodeIdentity, plans: list[ActivityPlan], checked: set[Any], *,
                 now: float, ttl: float) -> None:
    """:func:`.dispatch.plan_shards` for every plan of the batch (its checks, in its order:
    the lease first, then the activity runs), with one read of the activity runs, one of
    their shards and one INSERT."""
    try:
        epochs = [dispatch.dispatcher_epoch_once(session, node, plan.epoch, now=now, ttl=ttl, checked=checked)
                  for plan in plans]
        ids = sorted({plan.activity_run_id for plan in plans})
        activity_runs = counters.lock_activity_runs_by_id(session, ids)
        planned = [shard.id for plan in plans for shard in plan.shards]
        known = session.execute(select(Shard.id, Shard.activity_run_id).where(
            or_(Shard.activity_run_id.in_(ids), Shard.id.in_(planned)))).all()
        rows: list[dict[str, Any]] = []
        for plan, epoch in zip(plans, epochs, strict=True):
            activity_run = dispatch.own_activity_run(activity_runs.get(plan.activity_run_id), node,
                                                     plan.activity_run_id, epoch)
            rows.extend(dispatch.new_shard_rows(activity_run, plan.shards, known, epoch=epoch, now=now,
                                                queued_at=plan.queued_at))
    except DmgError as exc:
        raise Irregular(f"a plan: {exc}") from exc
    if rows:
        session.execute(insert(Shard), rows)
    for activity_run in activity_runs.values():
        if "shards" in vars(activity_run):  # a collection loaded before the INSERT is stale
            session.expire(activity_run, ["shards"])



# For :mod:`.reportcore`, which applies the same batches with Core statements.
check_regular = _check_regular
apply_plans = _apply_plans
