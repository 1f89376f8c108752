"""A batch of a node's shard reports and file results, applied in one transaction.

Each item is checked exactly as the single routes check it (``POST
/shards/{id}/report``, ``POST /shards/{id}/files``): the reporting node is the
token's, a worker's report only for an attempt placed on it, a ``placed`` report
only from the gateway's current dispatcher. Items are applied in order, each in
its own savepoint:

- an item refused for good (StaleAttempt, NotFound, PermissionDenied, BadInput...)
  records nothing and gets its error in ``results``; the next items go on;
- a Retryable item (its placement is not known yet, a concurrent write) is not
  applied and gets ``retry: true`` with its error: the node sends it again later.
  The later items of the same shard wait with it (``retry: true``, not applied:
  a shard's reports apply in order); every other item goes on, so one report the
  cloud cannot take yet never holds up the node's other reports;
- an item whose placement came from a dispatcher the cloud no longer takes as its
  gateway's (:class:`~dmg.cloud.service.leader.NotDispatcher`) gets
  ``not_dispatcher: true``: the placement stays with the site for the next dispatcher;
- an item ``relayed_for`` a removed node comes from the dispatcher and is checked as
  that node's own (:mod:`.relay`).

The lease holder's batches also carry the plans of the activity runs it claimed (an
item ``{plan: {activity_run_id, epoch, shards}}``, :func:`dispatch.plan_shards`), in
the one ordered list the placements travel in, each plan before its shards'
placements. A plan is fenced as the single route fences it (a plan from an epoch
older than its activity run's claim is refused, for that item alone); a plan that must
wait (Retryable) makes every item of its shards after it in the batch wait too. A
shard report that arrives before its shard's plan (a worker's, sent through its own
outbox) is answered ``retry`` while the activity run is claimed and unplanned.

Every item is idempotent (a report sets fields; file results are one row per path),
so a batch sent again after a lost answer changes nothing and counts nothing twice.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from dmg.cloud.models import Shard
from dmg.cloud.schemas import ReportItem
from dmg.cloud.service import attempts, counters, dispatch, files, relay
from dmg.cloud.service.gateways import NodeIdentity
from dmg.cloud.service.leader import NotDispatcher
from dmg.errors import DmgError, Retryable


def apply_batch(session: Session, node: NodeIdentity, items: list[ReportItem], *, now: float,
                ttl: float) -> dict[str, Any]:
    """-> ``{applied: n, results: [{shard_id, ok: true, status, attempt} | {shard_id, ok:
    false, error, message, hint, retry?, not_dispatcher?}], retry: None | {error, message,
    hint}}``: every item gets its result (``applied`` is their number; ``retry`` is the
    first item's retry error, if any). See the module docstring."""
    results: list[dict[str, Any]] = []
    retry: dict[str, Any] | None = None
    waiting: dict[str, dict[str, Any]] = {}  # shard id -> the retry error its earlier item got
    held: list[Any] = []  # rows read for one item stay in the session for the next ones
    checked: set[Any] = set()  # placement checks passed (the dispatcher, its nodes): once a batch
    # Every shard of the batch in one statement (PostgreSQL: locked, in id order); the
    # counters are applied when the batch commits (:mod:`.counters`).
    shards = counters.lock_shards(session, [item.shard_id for item in items if item.shard_id])
    held.append(shards)
    attempts.preload(session, list(shards))
    for item in items:
        if item.plan is not None:
            before = set(checked)
            results.append(_apply_plan(session, node, item, waiting, checked, now=now, ttl=ttl))
            if not results[-1]["ok"]:
                checked = before
            if results[-1].get("retry"):
                retry = retry or {k: results[-1][k] for k in ("error", "message", "hint")
                                  if k in results[-1]}
            continue
        if item.shard_id in waiting:  # an earlier report of this shard waits: so does this one
            results.append({"shard_id": item.shard_id, "ok": False, "retry": True, **waiting[item.shard_id]})
            continue
        before = set(checked)
        recorded = counters.snapshot(session)
        try:
            with session.begin_nested():
                results.append({"shard_id": item.shard_id, "ok": True,
                                **_apply_item(session, node, item, held, checked, now=now, ttl=ttl)})
        except Retryable as exc:
            checked = before
            counters.restore(session, recorded)
            attempts.forget(session)
            error = exc.to_json()
            waiting[item.shard_id] = error
            retry = retry or error
            results.append({"shard_id": item.shard_id, "ok": False, "retry": True, **error})
        except DmgError as exc:
            checked = before  # what the refused item checked was rolled back with it
            counters.restore(session, recorded)
            attempts.forget(session)
            result = {"shard_id": item.shard_id, "ok": False, **exc.to_json()}
            if isinstance(exc, NotDispatcher):
                result["not_dispatcher"] = True
            results.append(result)
    return {"applied": len(results), "results": results, "retry": retry}


def _apply_plan(session: Session, node: NodeIdentity, item: ReportItem, waiting: dict[str, dict[str, Any]],
                checked: set[Any], *, now: float, ttl: float) -> dict[str, Any]:
    """Apply one plan item in a savepoint -> its result; a plan that must wait marks its
    shards ``waiting`` (their later items in the batch wait with it)."""
    plan = item.plan
    assert plan is not None
    head: dict[str, Any] = {"shard_id": "", "activity_run_id": plan.activity_run_id}
    recorded = counters.snapshot(session)
    try:
        with session.begin_nested():
            answer = dispatch.plan_shards(session, node, plan.activity_run_id, epoch=plan.epoch,
                                          shards=plan.shards, now=now, ttl=ttl, queued_at=plan.queued_at,
                                          settle=False, checked=checked)
        return {**head, "ok": True, **({"status": answer["status"]} if "status" in answer else {})}
    except Retryable as exc:
        counters.restore(session, recorded)
        error = exc.to_json()
        for shard in plan.shards:
            waiting[shard.id] = error
        return {**head, "ok": False, "retry": True, **error}
    except DmgError as exc:
        counters.restore(session, recorded)
        result = {**head, "ok": False, **exc.to_json()}
        if isinstance(exc, NotDispatcher):
            result["not_dispatcher"] = True
        return result


def _apply_item(session: Session, node: NodeIdentity, item: ReportItem, held: list[Any],
                checked: set[Any], *, now: float, ttl: float) -> dict[str, Any]:
    # The session's identity map keeps only objects someone references: hold the shard, its
    # activity run and run, read by both steps below and by the batch's next items.
    shard = session.get(Shard, item.shard_id)
    if shard is not None:
        held.extend((shard, shard.activity_run))
    out: dict[str, Any] = {}
    if item.relayed_for is not None:  # a removed node's report, sent by the dispatcher
        node = relay.relayed_identity(session, node, item, now=now, ttl=ttl, checked=checked)
    if item.files is not None:
        out.update(files.record_file_results(session, node, item.shard_id, item.files, now=now))
    if item.report is not None:
        out.update(dispatch.report_shard(session, node, item.shard_id, item.report, now=now, ttl=ttl,
                                         checked=checked))
    if shard is not None and "run" in vars(shard.activity_run):
        held.append(shard.activity_run.run)
    return out
