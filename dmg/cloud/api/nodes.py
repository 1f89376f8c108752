"""Routes for nodes: registration (gateway key), heartbeats, and dispatch (node token)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from dmg.cloud.api.auth import Node, Service, by_gateway_key
from dmg.cloud.schemas import (
    MAX_CLAIM_WAIT,
    Claim,
    FailActivityRun,
    Heartbeat,
    NodeRegister,
    NodesGone,
    PlanShards,
    ReportBatch,
    ShardReport,
)
from dmg.cloud.service import CloudService, NodeIdentity

router = APIRouter()

#: How often a waiting long-poll re-reads the database (runs queued by another process).
RECHECK = 0.5


@router.post("/nodes/register", status_code=201, tags=["nodes"], dependencies=[Depends(by_gateway_key)])
def register_node(body: NodeRegister, svc: Service) -> dict[str, Any]:
    """Register a node with a gateway key; -> ``{gateway, gateway_id, node, token}``."""
    return svc.register_node(key=body.key, name=body.name, version=body.version,
                             public_key=body.public_key, expect_gateway_id=body.expect_gateway_id)


@router.post("/nodes/heartbeat", tags=["nodes"])
def heartbeat(body: Heartbeat, node: Node, svc: Service) -> dict[str, Any]:
    """Record a node's heartbeat; -> ``{status, reasons}``."""
    return svc.heartbeat(node, body)


@router.get("/nodes/stores", tags=["nodes"])
def node_stores(node: Node, svc: Service) -> dict[str, Any]:
    """The stores the pipelines of the node's gateway use: ``{stores: [{name, type,
    location, options}]}``, so the node can check it reaches each one."""
    return {"stores": svc.node_stores(node)}


@router.post("/dispatch/claim", tags=["dispatch"])
async def claim(body: Claim, node: Node, svc: Service, request: Request) -> JSONResponse:
    """Long-poll up to ``wait`` s (at most 60) for Queued activity runs of the node's
    gateway and claim them as its dispatcher (``epoch``: the site lease's; the cloud issues
    its own, see README "who issues epochs"); -> ``{activity_runs: [...]}`` (empty when
    none came, while another node's cloud lease runs, or at once when one of the
    gateway's runs is cancelled meanwhile). ``cancelled``: the gateway's activity runs
    cancelled within the last hour, what ``GET /dispatch/cancelled`` answers, so a
    dispatcher of this version needs no request of its own for them (one of an older
    version ignores the field and asks). 409 stale_attempt for a superseded dispatcher."""
    notifier = request.app.state.notifier
    handoff = request.app.state.handoff
    deadline = time.monotonic() + min(body.wait, MAX_CLAIM_WAIT)
    began = svc.clock()
    woken = notified = False
    while True:
        answer = await run_in_threadpool(_claim_once, svc, node, body, began=began if woken else None,
                                         deadline=deadline, recheck=woken and not notified)
        if answer is not None:
            return JSONResponse(answer)
        # Listed while it waits: a run created meanwhile in this process may be claimed for
        # it in the run's own transaction (:mod:`..handoff`), and handed here.
        with handoff.waiting(node, epoch=body.epoch, limit=body.limit,
                             wake=lambda: notifier.notify(node.gateway_id)) as waiting:
            notified = await notifier.wait(node.gateway_id, min(RECHECK, max(deadline - time.monotonic(), 0)))
        handed = await waiting.answer()
        woken = True
        try:
            if await request.is_disconnected():
                # The dispatcher's process is gone (or stopping): free its cloud lease now, so
                # the next dispatcher need not wait for it to expire (and a newer epoch takes
                # back at once what was claimed for it and never planned: ``handed`` too).
                await run_in_threadpool(svc.release_dispatcher, node, epoch=body.epoch)
                return JSONResponse({"activity_runs": []})
            if handed is not None:
                return JSONResponse(handed)
        finally:
            waiting.responding()  # the run's creation that handed it runs may answer now


def _claim_once(svc: CloudService, node: NodeIdentity, body: Claim, *, began: float | None,
                deadline: float, recheck: bool) -> dict[str, Any] | None:
    """One claim (on a worker thread); -> the long-poll's answer, or None to wait on.

    It answers when runs were claimed, when the wait is over, or (``began``: after a
    wake-up, when the long-poll began) when a run of the gateway was cancelled since, so
    the dispatcher applies it now. Checked after the claim, not between the wake-up and
    the claim: a queued run is claimed one transaction after it is created. ``recheck``: a
    periodic look (no notice woke it), read-only when nothing is claimable."""
    claimed, cancelled = svc.claim_with_cancels(node, epoch=body.epoch, limit=body.limit, recheck=recheck,
                                                again=body.again)
    if claimed:  # the cancels were read in the claim's transaction
        return {"activity_runs": claimed, "cancelled": cancelled}
    if not (time.monotonic() >= deadline
            or (began is not None and svc.cancelled_activity_runs(node, since=began))):
        return None
    return {"activity_runs": [], "cancelled": svc.cancelled_activity_runs(node)}


@router.get("/dispatch/cancelled", tags=["dispatch"])
def cancelled(node: Node, svc: Service) -> dict[str, Any]:
    """The activity runs of the node's gateway cancelled within the last hour:
    ``{activity_runs: [id, ...]}`` (the dispatcher drops their shards)."""
    return {"activity_runs": svc.cancelled_activity_runs(node)}


@router.post("/activity-runs/{activity_run_id}/shards", tags=["dispatch"])
def plan_shards(activity_run_id: str, body: PlanShards, node: Node, svc: Service) -> dict[str, Any]:
    """Record the shards of a claimed activity run (idempotent); none -> Succeeded."""
    return svc.plan_shards(node, activity_run_id, epoch=body.epoch, shards=body.shards)


@router.post("/dispatch/nodes-gone", tags=["dispatch"])
def nodes_gone(body: NodesGone, node: Node, svc: Service) -> dict[str, Any]:
    """The dispatcher saw every process of these nodes lose its broker connection: they
    are Offline until their next heartbeat; -> ``{nodes: [marked]}``. 409 stale_attempt
    for an epoch older than the gateway's."""
    return {"nodes": svc.nodes_gone(node, epoch=body.epoch, nodes=body.nodes)}


@router.post("/activity-runs/{activity_run_id}/fail", tags=["dispatch"])
def fail_activity_run(activity_run_id: str, body: FailActivityRun, node: Node,
                      svc: Service) -> dict[str, Any]:
    return svc.fail_activity_run(node, activity_run_id, epoch=body.epoch, error=body.error)


@router.post("/shards/{shard_id}/report", tags=["dispatch"])
def report_shard(shard_id: str, body: ShardReport, node: Node, svc: Service) -> dict[str, Any]:
    """Record a shard's progress or result; 409 stale_attempt if a newer attempt exists."""
    return svc.report_shard(node, shard_id, body)


@router.post("/nodes/reports", tags=["dispatch"])
def report_batch(body: ReportBatch, node: Node, svc: Service) -> dict[str, Any]:
    """A node's shard reports and file results, oldest first, in one transaction; each item
    checked as the single routes check it. -> ``{applied, results: [...], retry}``: the
    first ``applied`` items were handled (``ok``, or refused for good with their error);
    the rest must be sent again (``retry`` says why)."""
    return svc.report_batch(node, body.items)
