"""Routes for users (API token): gateways, nodes, stores, pipelines, runs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from dmg.cloud.api.auth import Service, require_user
from dmg.cloud.api.handoff import WaitingClaim, answers_first
from dmg.cloud.schemas import (
    EncryptionChange,
    GatewayCreate,
    KeyRegenerate,
    PipelineCreate,
    ProxyChange,
    StoreCreate,
)

router = APIRouter(dependencies=[Depends(require_user)])


@router.post("/gateways", status_code=201, tags=["gateways"])
def create_gateway(body: GatewayCreate, svc: Service) -> dict[str, Any]:
    """Create a logical gateway; -> ``{name, status, key1, key2, ...}``."""
    return svc.create_gateway(body.name)


@router.get("/gateways", tags=["gateways"])
def list_gateways(svc: Service) -> list[dict[str, Any]]:
    return svc.list_gateways()


@router.get("/gateways/{name}", tags=["gateways"])
def gateway(name: str, svc: Service) -> dict[str, Any]:
    """-> ``{name, status, version, nodes: [...], created_at}``."""
    return svc.gateway(name)


@router.get("/gateways/{name}/keys", tags=["gateways"])
def gateway_keys(name: str, svc: Service) -> dict[str, str]:
    return svc.gateway_keys(name)


@router.post("/gateways/{name}/keys/regenerate", tags=["gateways"])
def regenerate_key(name: str, body: KeyRegenerate, svc: Service) -> dict[str, str]:
    """Replace one key; the old one stops registering nodes, registered nodes stay."""
    return svc.regenerate_key(name, body.key)


@router.put("/gateways/{name}/encryption", tags=["gateways"])
def set_encryption(name: str, body: EncryptionChange, svc: Service) -> dict[str, Any]:
    """Set the gateway's encryption mode (``tls``: nodes reach the site broker over TLS;
    ``none``); 409 while it has more than one node. -> the gateway."""
    return svc.set_encryption(name, body.mode)


@router.put("/gateways/{name}/proxy", tags=["gateways"])
def set_proxy(name: str, body: ProxyChange, svc: Service) -> dict[str, Any]:
    """Set the gateway's HTTP proxy (``url``: ``http(s)://[user:password@]host[:port]``;
    ``""`` clears it). Every node applies it to its cloud and cloud-store traffic (never to
    the site broker) from its next heartbeat, and is Inactive until it has. -> the gateway,
    its ``proxy`` shown without credentials."""
    return svc.set_proxy(name, body.url)


@router.get("/gateways/{name}/nodes", tags=["nodes"])
def list_nodes(name: str, svc: Service) -> list[dict[str, Any]]:
    """The gateway's nodes: ``name, status, reasons`` (every status but Online has reasons in
    words), ``version, role, running, limit``, the host's ``cpu_percent, memory_available,
    network_in, network_out`` and the node's own ``proc_cpu_percent, proc_mem_bytes``
    (its process tree) and ``moved_in_bytes, moved_out_bytes`` (its copies), ``config``
    (its fingerprint's parts), ``credential_status, problems, stores_unreachable, draining,
    last_heartbeat, registered_at, encryption``."""
    return svc.list_nodes(name)


@router.post("/gateways/{name}/nodes/{node}/upgrade", tags=["nodes"])
def upgrade_node(name: str, node: str, svc: Service) -> dict[str, Any]:
    """Ask a node to upgrade: it drains, restarts on the version installed on its machine and
    rejoins (the request reaches it in its heartbeat's answer); -> the node (Upgrading).
    409 when it is Offline or another node of the gateway is upgrading."""
    return svc.request_upgrade(name, node)


@router.delete("/gateways/{name}/nodes/{node}", status_code=204, tags=["nodes"])
def remove_node(name: str, node: str, svc: Service) -> Response:
    """Remove a node; its token stops working at once."""
    svc.remove_node(name, node)
    return Response(status_code=204)


@router.post("/stores", status_code=201, tags=["stores"])
def add_store(body: StoreCreate, svc: Service) -> dict[str, Any]:
    """Define a store (never a secret: those are set from inside the site)."""
    return svc.add_store(body)


@router.get("/stores", tags=["stores"])
def list_stores(svc: Service) -> list[dict[str, Any]]:
    return svc.list_stores()


@router.post("/pipelines", status_code=201, tags=["pipelines"])
def create_pipeline(body: PipelineCreate, svc: Service) -> dict[str, Any]:
    return svc.create_pipeline(body)


@router.get("/pipelines", tags=["pipelines"])
def list_pipelines(svc: Service) -> list[dict[str, Any]]:
    return svc.list_pipelines()


@router.post("/pipelines/{name}/runs", status_code=201, tags=["runs"])
async def run_pipeline(name: str, request: Request, svc: Service) -> dict[str, Any]:
    """Queue a run; its activity runs wait for the gateway's dispatcher."""
    taken: list[WaitingClaim] = []

    def claim_for(gateway_id: int) -> list[WaitingClaim]:
        taken.extend(request.app.state.handoff.take(gateway_id))
        return list(taken)

    gateway_id, run, handed = await run_in_threadpool(svc.start_run, name, claim_for=claim_for)
    if not handed:  # a long-poll handed its activity runs was woken by the handing
        request.app.state.notifier.notify(gateway_id)
    else:  # its answer goes out before this response (:mod:`..handoff`)
        await answers_first(taken)
    return run


@router.get("/runs", tags=["runs"])
def list_runs(svc: Service, limit: int = Query(default=50, ge=1, le=1000)) -> list[dict[str, Any]]:
    return svc.list_runs(limit=limit)


@router.post("/runs/{run_id}/cancel", tags=["runs"])
async def cancel_run(run_id: str, request: Request, svc: Service) -> dict[str, Any]:
    """Cancel a run that has not ended: it becomes Cancelled, its queued shards never
    start, its running shards stop and leave no staging files; what was committed
    stays. 409 for a run that already ended."""
    gateway_id, run = await run_in_threadpool(svc.cancel_run, run_id)
    request.app.state.notifier.notify(gateway_id)
    return run


@router.get("/runs/{run_id}", tags=["runs"])
def run(run_id: str, svc: Service) -> dict[str, Any]:
    return svc.run(run_id)


@router.get("/runs/{run_id}/attempts", tags=["runs"])
def run_attempts(run_id: str, svc: Service) -> list[dict[str, Any]]:
    """Every attempt of every shard of the run, by activity, shard and attempt:
    ``{shard_id, shard_index, activity, attempt, node, status, outcome, error, wait_reason,
    files, bytes, placed_at, started_at, ended_at, waited, duration, current}``; ``outcome``
    is how it ended ("" while it runs): succeeded, failed, cancelled, fenced, worker died,
    node offline, node restarted, node removed, node drained, moved, re-issued ..."""
    return svc.run_attempts(run_id)


@router.get("/shards/{shard_id}/attempts", tags=["runs"])
def shard_attempts(shard_id: str, svc: Service) -> list[dict[str, Any]]:
    """Every attempt of one shard, oldest first (the shape of ``/runs/{id}/attempts``)."""
    return svc.shard_attempts(shard_id)
