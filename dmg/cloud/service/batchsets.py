"""What a report batch applied as a set needs besides its items: the check that the set path
may take the batch, and its plans applied with one read of their activity runs (plain rows),
one of their shards and one INSERT. :mod:`.reportcore` applies the batch itself with Core
statements; a batch it cannot take raises :class:`Irregular`, and its caller rolls the
transaction back and applies the batch item by item (:func:`.batches.apply_batch`, one
savepoint per item): when a plan or a placement is refused or must wait, an item is
relayed for a removed node, a report comes before its shard's plan in the batch, or an
activity run is planned twice in it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy.orm import Session

from dmg.cloud.models import ActivityRun, Shard
from dmg.cloud.schemas import ActivityPlan, ReportItem
from dmg.cloud.service import counters, dispatch
from dmg.cloud.service.gateways import NodeIdentity
from dmg.errors import DmgError

#: Shard ids of the batch's plans, at most, to check in one statement (SQLite's limit on
#: a statement's parameters is 32,766); a larger batch goes item by item.
MAX_PLANNED_IDS = 5_000


class Irregular(Exception):
    """The batch must be applied item by item (see the module docstring)."""


def check_regular(items: list[ReportItem], plans: list[ActivityPlan]) -> None:
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


def apply_plans(session: Session, node: NodeIdentity, plans: list[ActivityPlan], checked: set[Any], *,
                 now: float, ttl: float) -> None:
    """:func:`.dispatch.plan_shards` for every plan of the batch (its checks, in its order:
    the lease first, then the activity runs), with one read of the activity runs, one of
    their shards and one INSERT."""
    try:
        epochs = [dispatch.dispatcher_epoch_once(session, node, plan.epoch, now=now, ttl=ttl, checked=checked)
                  for plan in plans]
        ids = sorted({plan.activity_run_id for plan in plans})
        activity_runs = counters.lock_activity_run_rows(session, ids)
        planned = [shard.id for plan in plans for shard in plan.shards]
        known = session.execute(select(Shard.id, Shard.activity_run_id).where(
            or_(Shard.activity_run_id.in_(ids), Shard.id.in_(planned)))).all()
        rows: list[dict[str, Any]] = []
        for plan, epoch in zip(plans, epochs, strict=True):
            activity_run = dispatch.own_activity_run(activity_runs.get(plan.activity_run_id), node,
                                                     plan.activity_run_id, epoch)
            rows.extend(dispatch.new_shard_rows(session, activity_run, plan.shards, known, epoch=epoch,
                                                now=now, queued_at=plan.queued_at))
    except DmgError as exc:
        raise Irregular(f"a plan: {exc}") from exc
    if rows:
        session.execute(insert(Shard), rows)
    for activity_run_id in activity_runs:  # an ORM object's collection loaded before the INSERT is stale
        loaded = session.identity_map.get(Session.identity_key(ActivityRun, activity_run_id))
        if loaded is not None and "shards" in vars(loaded):
            session.expire(loaded, ["shards"])

