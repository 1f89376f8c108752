"""What a gateway's dispatcher and its workers tell the cloud: claims, plans, reports.

Fencing: the cloud issues the dispatcher epochs it fences with (:mod:`.leader`): a
claim, plan, failure or ``placed`` report names the caller's site lease epoch and is
refused (StaleAttempt) unless the caller is the gateway's current dispatcher at the
cloud. Activity runs record the cloud epoch that claimed them. Shard reports of
workers are fenced by the shard's attempt and accepted only from the node the
attempt was placed on.

Claiming is atomic: each activity run is taken with a conditional UPDATE (``WHERE
status = 'Queued'``) whose row count says who won, so two claimers never get the
same one, on SQLite and PostgreSQL alike. A dispatcher with a newer epoch also
takes back activity runs that an older dispatcher claimed but never planned.

A run created while its gateway's dispatcher's long-poll waits in the same cloud process
is claimed for that long-poll in the run's own transaction, by :func:`claim` itself
(:meth:`dmg.cloud.service.CloudService.start_run`, :mod:`dmg.cloud.api.handoff`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any, NamedTuple, Protocol

from sqlalchemy import and_, bindparam, insert, or_, select, update
from sqlalchemy.orm import Session

from dmg.cloud.models import (
    IN_PROGRESS,
    QUEUED,
    ActivityRun,
    Gateway,
    Node,
    Pipeline,
    Run,
    Shard,
)
from dmg.cloud.schemas import PlannedShard, ShardReport
from dmg.cloud.service import attempts, counters, leader
from dmg.cloud.service.gateways import NodeIdentity
from dmg.cloud.service.stores import store_rows
from dmg.cloud.service.views import activity_run_json, store_json
from dmg.definitions import stored_definition_problem
from dmg.errors import (
    BadInput,
    Conflict,
    DmgError,
    NotFound,
    PermissionDenied,
    Retryable,
    StaleAttempt,
    Unauthorized,
)
from dmg.shards.status import (
    CLOUD_FAILED,
    CLOUD_FINISHED,
    CLOUD_PLACED,
    CLOUD_PLANNED,
    CLOUD_RUNNING,
    CLOUD_SUCCEEDED,
)

log = logging.getLogger(__name__)


class WaitingClaim(Protocol):
    """A claim long-poll waiting in this cloud process (:mod:`dmg.cloud.api.handoff`): a
    new run may be claimed for it in the run's own transaction."""

    node: NodeIdentity
    epoch: int  # its site epoch, as it sent it
    limit: int

    def hand(self, answer: dict[str, Any] | None) -> None:
        """Its long-poll's answer once the transaction ended (None: nothing for it)."""


def _claimable(epoch: Any) -> Any:
    return or_(ActivityRun.status == QUEUED,
               and_(ActivityRun.status == IN_PROGRESS, ActivityRun.planned.is_(False),
                    ActivityRun.claim_epoch < epoch))


#: What the claim reads of each activity run it takes (:class:`_Claimed`).
_CLAIMED_COLUMNS = ("id", "run_id", "name", "spec", "queued_at", "position")


class _Claimed(NamedTuple):
    """A claimed activity run as the claim's UPDATE returns it (no ORM object)."""

    id: str
    run_id: str
    name: str
    spec: Any
    queued_at: float
    position: int


class _ClaimStatements:
    """The claim's statements, built once with bound parameters: building SQLAlchemy
    expressions anew for every claim cost as much CPU as running them (the claim's answer
    waits on it)."""

    def __init__(self) -> None:
        gateway_id: Any = bindparam("gateway_id")
        epoch: Any = bindparam("epoch")
        self.candidates = (select(ActivityRun.id)
                           .where(ActivityRun.gateway_id == gateway_id, _claimable(epoch))
                           .order_by(ActivityRun.queued_at, ActivityRun.position).limit(bindparam("limit")))
        self.any_claimable = select(ActivityRun.id).where(ActivityRun.gateway_id == gateway_id,
                                                          _claimable(epoch)).limit(1)
        # what this dispatcher (node and cloud epoch) claimed and has not planned, other than
        # what it holds: a claim whose answer it never received (:func:`claim`, ``again``)
        columns: Any = ActivityRun.__table__.c
        self.unanswered = (select(*(columns[name] for name in _CLAIMED_COLUMNS))
                           .where(ActivityRun.gateway_id == gateway_id, ActivityRun.status == IN_PROGRESS,
                                  ActivityRun.planned.is_(False), ActivityRun.claim_epoch == epoch,
                                  ActivityRun.claimed_by == bindparam("node"),
                                  ActivityRun.id.not_in(bindparam("held", expanding=True)))
                           .order_by(ActivityRun.queued_at, ActivityRun.position).limit(bindparam("limit")))
        # A Core UPDATE returning the columns the answer needs, as plain rows: the ORM's
        # bulk-update path and an ActivityRun object per row were a third of the claim's CPU.
        table: Any = ActivityRun.__table__
        taking = (update(table)
                  .values(status=IN_PROGRESS, claim_epoch=bindparam("claim_epoch_v"),
                          claimed_by=bindparam("claimed_by_v"), claimed_at=bindparam("now_v"),
                          started_at=bindparam("now_v"), ended_at=None)
                  .returning(*(table.c[name] for name in _CLAIMED_COLUMNS)))
        wanted = table.c.id.in_(bindparam("wanted", expanding=True))
        # (the status it was in before, the conditional UPDATE that takes it from there)
        self.take = ((QUEUED, taking.where(wanted, ActivityRun.status == QUEUED)),
                     (IN_PROGRESS, taking.where(wanted, _claimable(epoch))))
        # its id only: loading the Node object cost ~0.3 ms of the claim's CPU
        self.node = select(Node.id).where(Node.id == bindparam("node_id"))
        self.pipelines = (select(Run.id, Pipeline.name).join(Pipeline, Pipeline.id == Run.pipeline_id)
                          .where(Run.id.in_(bindparam("runs", expanding=True))))


_STATEMENTS = _ClaimStatements()


class ReadAlready(NamedTuple):
    """What the claim's transaction read already (a run's creation that claims in its own
    transaction: :meth:`dmg.cloud.service.CloudService.start_run`): the claim does not read
    it again. ``pipelines``: run id -> its pipeline's name; ``stores``: stores' rows by name
    (:func:`.stores.store_rows`)."""

    pipelines: dict[str, str]
    stores: dict[str, Any]


def claim(session: Session, node: NodeIdentity, *, epoch: int, limit: int, now: float,
          ttl: float, again: Collection[str] | None = None,
          read: ReadAlready | None = None) -> list[dict[str, Any]]:
    """Claim up to ``limit`` activity runs of the node's gateway (oldest first) as its
    dispatcher with site epoch ``epoch``;
    -> ``[{id, run_id, pipeline, name, epoch, source: {store: {...}, path}, sink: ..., options}]``.
    LeaseHeld while another node's cloud lease runs (:mod:`.leader`). ``read``: rows this
    transaction read already (the same as the claim would read: no statement for them).

    ``again`` (the ids the dispatcher holds, claimed and not yet planned): its last claim
    may have been answered and the answer lost (the connection broke after the commit, the
    cloud died before it wrote the answer); the runs this node claimed with the same cloud
    epoch, still unplanned and not among ``again``, are in the answer once more.
    Without it they would wait for the next dispatcher epoch (a failover) to be claimed."""
    # Its statements other than the lease's go to the session's connection as Core statements:
    # the ORM's execution path (compile state, bulk-update synchronisation, autoflush) was
    # more than half of the claim's CPU. The lease's change (an ORM object) is flushed at the
    # commit; its row is locked already (:func:`.leader.dispatcher_epoch`). ORM activity
    # runs and runs of this session that the claim changes are expired (:func:`.counters.runs_claimed`).
    connection = session.connection()
    if connection.scalar(_STATEMENTS.node, {"node_id": node.node_id}) is None:  # removed while it waited
        raise Unauthorized("the node was removed", hint="register the node again with `dmg node register`")
    site_epoch = epoch
    epoch = leader.dispatcher_epoch(session, node, site_epoch, now=now, ttl=ttl, claiming=True)
    won: dict[str, str] = {}  # activity run id -> its status before this claim (for the counters)
    claimed: list[_Claimed] = []
    if again is not None:  # claimed before, not counted again
        claimed = [_Claimed(*row) for row in connection.execute(_STATEMENTS.unanswered, {
            "gateway_id": node.gateway_id, "epoch": epoch, "node": node.node, "held": sorted(again),
            "limit": limit})]
        for activity_run in claimed:
            log.warning("activity run %s sent again to %s@%s epoch %s: its claim's answer was lost",
                        activity_run.id, node.node, node.gateway, epoch)
        limit -= len(claimed)
    candidates = sorted(connection.scalars(  # taken in id order: row locks in one order
        _STATEMENTS.candidates, {"gateway_id": node.gateway_id, "epoch": epoch, "limit": limit}).all()
    ) if limit > 0 else []
    # One conditional UPDATE for the Queued ones, one more only for those a newer epoch takes
    # back: the row count of each row (RETURNING) says who won, never two claimers. The
    # UPDATE returns the claimed rows themselves: no second SELECT for them.
    for was, take in _STATEMENTS.take:
        wanted = [activity_run_id for activity_run_id in candidates if activity_run_id not in won]
        if not wanted:
            break
        taken = [_Claimed(*row) for row in connection.execute(
            take, {"wanted": wanted, "epoch": epoch, "claim_epoch_v": epoch, "claimed_by_v": node.node,
                   "now_v": now})]
        won.update((activity_run.id, was) for activity_run in taken)
        claimed.extend(taken)
    if not claimed:
        return []
    claimed.sort(key=lambda a: (a.queued_at, a.position))
    # The pipelines' names only: loading the Pipeline rows decodes each one's whole
    # definition (a JSON list of every activity) once per claimed row.
    known = read or ReadAlready({}, {})
    run_ids = {a.run_id for a in claimed}
    pipelines = {run_id: known.pipelines[run_id] for run_id in run_ids & known.pipelines.keys()}
    if len(pipelines) < len(run_ids):
        pipelines.update(connection.execute(_STATEMENTS.pipelines,
                                            {"runs": sorted(run_ids - pipelines.keys())}).tuples().all())
    names = {_store_name(a.spec, side) for a in claimed for side in ("source", "sink")} - {""}
    stores = {name: known.stores[name] for name in names & known.stores.keys()}
    if len(stores) < len(names):
        stores.update(store_rows(session, names - stores.keys()))
    out = []
    bodies = [_claimed_json(activity_run, stores, pipeline=pipelines.get(activity_run.run_id, ""),
                            gateway=node.gateway, epoch=site_epoch) for activity_run in claimed]
    for activity_run, body in zip(claimed, bodies, strict=True):
        if activity_run.id not in won and not isinstance(body, str):
            body["again"] = True  # its plan may be recorded at the site already
    if not any(isinstance(body, str) for body in bodies):  # the usual case: one UPDATE per run
        from_queued: dict[str, int] = {}  # run id -> its activity runs taken from Queued
        for activity_run in claimed:
            if won.get(activity_run.id) == QUEUED:
                from_queued[activity_run.run_id] = from_queued.get(activity_run.run_id, 0) + 1
            log.info("activity run %s claimed by %s@%s epoch %s (site epoch %s)", activity_run.id, node.node,
                     node.gateway, epoch, site_epoch)
        counters.runs_claimed(session, from_queued, now=now, activity_runs=won)
        return [body for body in bodies if not isinstance(body, str)]
    # Rare (a definition saved before dmg.definitions): the ORM objects, for the general counters
    # (read afresh: the UPDATE went around the session).
    loaded = {a.id: a for a in session.scalars(select(ActivityRun).where(
        ActivityRun.id.in_([c.id for c in claimed])).execution_options(populate_existing=True))}
    for row, body in zip(claimed, bodies, strict=True):
        taken_run = loaded[row.id]
        if row.id in won:  # (one sent again was counted at its claim)
            counters.activity_status_changed(taken_run, won[row.id], now=now)
        if isinstance(body, str):  # cannot be sent: it fails alone, the others go on
            taken_run.failed_by_dispatcher = True
            taken_run.error = body
            counters.derive_later(session, taken_run, now=now)
            log.warning("activity run %s failed at claim: %s", row.id, body)
        else:
            out.append(body)
            log.info("activity run %s claimed by %s@%s epoch %s (site epoch %s)", row.id, node.node,
                     node.gateway, epoch, site_epoch)
    counters.settle(session)
    return out


def nothing_to_claim(session: Session, node: NodeIdentity, *, epoch: int, now: float, ttl: float) -> bool:
    """True when a :func:`claim` by ``node`` with site epoch ``epoch`` would only read and
    claim nothing: the node holds its gateway's cloud lease with that epoch, more than half
    a TTL left (so the claim would not extend it), and no activity run is claimable. A read
    transaction can tell, so an empty re-check of a waiting long-poll takes no write lock;
    False means "ask :func:`claim`" (it decides everything else)."""
    gateway = session.get(Gateway, node.gateway_id)
    if (gateway is None or gateway.leader_node_id != node.node_id or gateway.leader_site_epoch != epoch
            or gateway.leader_until - now <= ttl / 2 or session.get(Node, node.node_id) is None):
        return False
    return session.scalar(_STATEMENTS.any_claimable,
                          {"gateway_id": node.gateway_id, "epoch": gateway.max_epoch}) is None


def _store_name(spec: Any, side: str) -> str:
    try:
        return str(spec[side]["store"])
    except (KeyError, TypeError):
        return ""


def _claimed_json(activity_run: _Claimed, stores: dict[str, Any], *, pipeline: str, gateway: str,
                  epoch: int) -> dict[str, Any] | str:
    """What the dispatcher is sent for a claimed activity run, or why it cannot be: a
    definition saved before :mod:`dmg.definitions` (too deep, a store gone)."""
    spec = activity_run.spec
    problem = stored_definition_problem(spec)
    if problem:
        return f"activity {activity_run.name!r}: {problem}"
    ends: dict[str, dict[str, Any]] = {}
    for side in ("source", "sink"):
        name = _store_name(spec, side)
        store = stores.get(name)
        if store is None:
            return f"activity {activity_run.name!r}: {side} store {name!r} does not exist"
        shown = store_json(store)
        if "invalid" in shown:
            return f"activity {activity_run.name!r}: {side} store {name!r}: {shown['invalid']}"
        ends[side] = {"store": shown, "path": str(spec[side].get("path", ""))}
    return {
        "id": activity_run.id, "run_id": activity_run.run_id,
        "pipeline": pipeline, "gateway": gateway,
        "name": activity_run.name, "epoch": epoch, "source": ends["source"], "sink": ends["sink"],
        "options": dict(spec.get("options") or {}),
    }


def dispatcher_epoch_once(session: Session, node: NodeIdentity, site_epoch: int, *, now: float, ttl: float,
                          checked: set[Any] | None) -> int:
    """:func:`leader.dispatcher_epoch`, once per transaction and site epoch when ``checked``
    is given: the lease row stays locked (shared) until the commit, so it cannot change."""
    for key in checked or ():
        if key[0] == "epoch" and key[1] == site_epoch:
            return int(key[2])
    epoch = leader.dispatcher_epoch(session, node, site_epoch, now=now, ttl=ttl)
    if checked is not None:
        checked.add(("epoch", site_epoch, epoch))
    return epoch


def own_activity_run(activity_run: ActivityRun | Any | None, node: NodeIdentity, activity_run_id: str,
                     epoch: int) -> ActivityRun | Any:
    """``activity_run`` (read afresh, locked) when the dispatcher with cloud epoch ``epoch``
    may act on it; NotFound, Conflict (never claimed), StaleAttempt (claimed by a newer one)."""
    if activity_run is None or activity_run.gateway_id != node.gateway_id:
        raise NotFound(f"activity run {activity_run_id!r} does not exist in gateway {node.gateway!r}")
    if activity_run.claim_epoch is None:
        raise Conflict(f"activity run {activity_run_id!r} was not claimed",
                       hint="claim it with /dispatch/claim first")
    if epoch < activity_run.claim_epoch:
        raise StaleAttempt(f"activity run {activity_run_id!r} was claimed by a newer dispatcher")
    return activity_run


def _own_activity_run(session: Session, node: NodeIdentity, activity_run_id: str, site_epoch: int, *,
                      now: float, ttl: float, checked: set[Any] | None = None) -> tuple[ActivityRun, int]:
    """The activity run and the caller's cloud epoch; NotFound, StaleAttempt, LeaseHeld."""
    # the gateway's lease row first, then the activity run: the lock order
    epoch = dispatcher_epoch_once(session, node, site_epoch, now=now, ttl=ttl, checked=checked)
    activity_run = counters.lock_activity_run(session, activity_run_id)  # against a concurrent claim
    return own_activity_run(activity_run, node, activity_run_id, epoch), epoch


def plan_shards(session: Session, node: NodeIdentity, activity_run_id: str, *, epoch: int,
                shards: list[PlannedShard], now: float, ttl: float,
                queued_at: float | None = None, settle: bool = True,
                checked: set[Any] | None = None) -> dict[str, Any]:
    """Record an activity run's shards (idempotent per shard id: a plan sent again, by a
    new dispatcher too, is a no-op); no shard -> Succeeded. The new shard rows go in one
    Core INSERT (a batch of plans costs a statement per plan, not a row at a time).
    ``queued_at``: when the site queued them (kept between the claim and ``now``).
    ``settle``: apply the counters now (the answer's status is derived); a batch settles
    once, at its commit, and passes its ``checked`` (the lease read once a batch)."""
    _check_plan(shards)
    activity_run, epoch = _own_activity_run(session, node, activity_run_id, epoch, now=now, ttl=ttl,
                                            checked=checked)
    ids = [s.id for s in shards]
    known = session.execute(select(Shard.id, Shard.activity_run_id).where(  # one statement for both checks
        or_(Shard.activity_run_id == activity_run.id, Shard.id.in_(ids)))).all()
    rows = new_shard_rows(session, activity_run, shards, known, epoch=epoch, now=now, queued_at=queued_at)
    if rows:
        session.execute(insert(Shard), rows)
        if "shards" in vars(activity_run):  # a collection loaded before the INSERT is stale
            session.expire(activity_run, ["shards"])
    if settle:
        counters.settle(session)
    return _plan_answer(activity_run, settle=settle)


def _check_plan(shards: list[PlannedShard]) -> None:
    ids = [s.id for s in shards]
    if len(set(ids)) != len(ids):
        raise BadInput("shards: a shard id is listed twice")
    indexes = [s.index for s in shards]
    if len(set(indexes)) != len(indexes):
        raise BadInput("shards: a shard index is listed twice")


def new_shard_rows(session: Session, activity_run: ActivityRun | Any, shards: list[PlannedShard], known: Any,
                   *, epoch: int, now: float, queued_at: float | None) -> list[dict[str, Any]]:
    """The rows to INSERT for a plan of ``activity_run`` (checked, its cloud ``epoch``; the ORM
    object or a row of :data:`.counters.PLAN_COLUMNS`),
    given ``known``: ``(shard id, activity run id)`` of the shards that exist among its own
    and the planned ids; records the counters (nothing for the same plan again).
    BadInput, Conflict (failed already; a shard id of another activity run)."""
    _check_plan(shards)
    if activity_run.failed_by_dispatcher:
        raise Conflict(f"activity run {activity_run.id!r} was already failed: {activity_run.error}")
    planned = {s.id for s in shards}
    existing = {shard_id for shard_id, owner in known if owner == activity_run.id}
    if activity_run.planned and activity_run.claim_epoch == epoch and existing.issuperset(planned):
        return []  # the same plan again: a no-op
    elsewhere = sorted(shard_id for shard_id, owner in known
                       if owner != activity_run.id and shard_id in planned)
    if elsewhere:
        raise Conflict(f"shard id {elsewhere[0]!r} belongs to another activity run",
                       hint="shard ids must be unique across activity runs")
    claimed = activity_run.claimed_at if activity_run.claimed_at is not None else now
    queued = now if queued_at is None else min(max(queued_at, claimed), now)
    rows = [{"id": p.id, "activity_run_id": activity_run.id, "index": p.index, "status": CLOUD_PLANNED,
             "node": "", "attempt": 0, "files_planned": p.files, "bytes_planned": p.bytes, "files": 0,
             "bytes": 0, "files_total": p.files, "bytes_total": p.bytes, "queued_at": queued,
             "wait_reason": "", "error": ""} for p in shards if p.id not in existing]
    # "planned" and the epoch go in the counters' one UPDATE of the activity run
    counters.shards_planned(session, activity_run, len(rows), now=now, epoch=epoch)
    return rows


def _plan_answer(activity_run: ActivityRun, *, settle: bool) -> dict[str, Any]:
    """The activity run (its status settled), or only its id within a batch (which
    settles at its commit and answers the item with ``ok``)."""
    return activity_run_json(activity_run, shards=False) if settle else {"id": activity_run.id}


def missing_shard(session: Session, node: NodeIdentity, shard_id: str) -> DmgError:
    """Why a report of ``shard_id``, unknown at the cloud, is refused: Retryable while its
    activity run is claimed and its plan has not arrived yet (the plan travels in the
    dispatcher's report batches, after the claim), NotFound otherwise."""
    activity_run_id, dash, index = shard_id.rpartition("-")
    if dash and index.isdigit():
        activity_run = session.get(ActivityRun, activity_run_id)
        if (activity_run is not None and activity_run.gateway_id == node.gateway_id
                and activity_run.status == IN_PROGRESS and not activity_run.planned
                and not activity_run.failed_by_dispatcher):
            return Retryable(f"the plan of activity run {activity_run_id!r} has not reached the cloud yet",
                             hint="send the report again; the dispatcher sends the plan first")
        if (activity_run is not None and activity_run.gateway_id == node.gateway_id and activity_run.planned
                and session.scalar(select(Shard.id).where(Shard.id == shard_id)) is not None):
            # The plan committed between the caller's read of the shard and this read of its
            # activity run (each statement sees the latest commit): the shard is there now.
            return Retryable(f"the plan of activity run {activity_run_id!r} reached the cloud meanwhile",
                             hint="send the report again")
    return NotFound(f"shard {shard_id!r} does not exist in gateway {node.gateway!r}",
                    hint="the dispatcher plans shards before it places them")


def fail_activity_run(session: Session, node: NodeIdentity, activity_run_id: str, *, epoch: int,
                      error: str, now: float, ttl: float) -> dict[str, Any]:
    """Mark an activity run Failed with ``error`` (idempotent; a cancelled one stays Cancelled)."""
    activity_run, _epoch = _own_activity_run(session, node, activity_run_id, epoch, now=now, ttl=ttl)
    if not activity_run.failed_by_dispatcher and activity_run.cancelled_at is None:
        activity_run.failed_by_dispatcher = True
        activity_run.error = error
        counters.derive_later(session, activity_run, now=now)
        counters.settle(session)
    return activity_run_json(activity_run, shards=False)


_REPORTED_FIELDS = ("files", "bytes", "files_total", "bytes_total", "wait_reason", "error")
_RANK = {CLOUD_PLANNED: 0, CLOUD_PLACED: 1, CLOUD_RUNNING: 2, CLOUD_SUCCEEDED: 3, CLOUD_FAILED: 3}


def check_placement(session: Session, node: NodeIdentity, report: ShardReport, *, now: float,
                    ttl: float, checked: set[Any]) -> None:
    """A ``placed`` report comes from the gateway's current dispatcher (by its site epoch
    when the report carries one) and names a node of the gateway. ``checked``: what this
    transaction already checked (a batch checks its dispatcher and each node once)."""
    if ("dispatcher", report.epoch) not in checked:
        if report.epoch is not None:
            dispatcher_epoch_once(session, node, report.epoch, now=now, ttl=ttl, checked=checked)
        elif not leader.current_dispatcher(session, node):
            raise PermissionDenied(f"node {node.node!r} is not the gateway's dispatcher",
                                   hint="only the dispatcher reports placements")
        checked.add(("dispatcher", report.epoch))
    target = report.node or node.node
    if ("node", target) not in checked:
        if session.scalar(select(Node.id).where(Node.gateway_id == node.gateway_id,
                                                Node.name == target)) is None:
            raise BadInput(f"node {target!r} is not a node of gateway {node.gateway!r}")
        checked.add(("node", target))


def report_shard(session: Session, node: NodeIdentity, shard_id: str, report: ShardReport, *,
                 now: float, ttl: float, checked: set[Any] | None = None) -> dict[str, Any]:
    """Record a shard report. StaleAttempt if a newer attempt was reported; a newer
    attempt replaces the node and the progress of the older one. A late non-final
    report of a finished attempt is ignored. Every attempt is kept apart too
    (:mod:`.attempts`). Only the dispatcher reports placements; only the node an
    attempt was placed on reports it (PermissionDenied, or Retryable before the
    placement is known). ``checked``: placement checks this transaction already passed
    (:mod:`.batches`)."""
    if checked is None:  # a single report (a batch locked its shards already)
        counters.lock_shards(session, [shard_id])
    shard = session.get(Shard, shard_id)
    if shard is None:
        raise missing_shard(session, node, shard_id)
    if shard.activity_run.gateway_id != node.gateway_id:
        raise NotFound(f"shard {shard_id!r} does not exist in gateway {node.gateway!r}",
                       hint="the dispatcher plans shards before it places them")
    if report.attempt < shard.attempt:
        raise StaleAttempt(f"shard {shard_id!r} attempt {report.attempt} was replaced by attempt "
                           f"{shard.attempt}", hint="this attempt must not commit its output")
    previous = shard.status
    placed = report.status == CLOUD_PLACED
    if placed:
        check_placement(session, node, report, now=now, ttl=ttl,
                        checked=set() if checked is None else checked)
    reporter = (report.node or node.node) if placed else node.node
    attempts.record_report(session, shard, report, node, now=now)
    before = counters.shard_figures(shard)
    if not apply_to_shard(shard, report, reporter, now=now):
        return {"status": shard.status, "attempt": shard.attempt}
    # Statuses follow the counters, applied when the transaction commits (:mod:`.counters`).
    counters.shard_changed(session, shard, before, now=now)
    if previous in CLOUD_FINISHED and shard.status not in CLOUD_FINISHED:
        counters.derive_later(session, shard.activity_run, now=now)  # an ended shard starts again
    return {"status": shard.status, "attempt": shard.attempt}


def apply_to_shard(shard: Any, report: ShardReport, reporter: str, *, now: float) -> bool:
    """Apply ``report`` (checked, not stale) to ``shard`` (an ORM object or anything with
    its columns as attributes) -> False when it changes nothing: a newer attempt replaces
    the node and the progress of the older one; a late report of this attempt never moves
    the shard backwards."""
    if report.attempt > shard.attempt:
        shard.attempt = report.attempt
        shard.node = reporter
        shard.files = shard.bytes = 0
        shard.started_at = shard.ended_at = None
        shard.error = ""
    elif _RANK.get(report.status, 0) < _RANK.get(shard.status, 0):
        # A late report of this attempt (a "placed" overtaken by "running", a
        # progress report after the end) never moves a shard backwards.
        return False
    shard.status = report.status
    shard.node = reporter
    for field in _REPORTED_FIELDS:  # a report sets only what it carries
        value = getattr(report, field)
        if value is not None:
            setattr(shard, field, value)
    if report.started_at is not None:
        shard.started_at = report.started_at
    elif report.status != CLOUD_PLACED and shard.started_at is None:
        shard.started_at = now
    if report.ended_at is not None:
        shard.ended_at = report.ended_at
    elif report.status in CLOUD_FINISHED and shard.ended_at is None:
        shard.ended_at = now
    return True
