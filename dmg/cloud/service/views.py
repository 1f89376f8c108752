"""JSON shapes the API returns (see :class:`dmg.cloud.client.CloudClient`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dmg.cloud.models import ActivityRun, Node, Pipeline, Run, Shard, Store
from dmg.credstatus import credential_state
from dmg.definitions import stored_definition_problem
from dmg.status import NodeStatus


def store_json(store: Store) -> dict[str, Any]:
    """A store; one saved before :mod:`dmg.definitions` whose options cannot be shown
    has ``options`` ``{}`` and ``invalid`` saying why (a list never fails on it)."""
    body = {"name": store.name, "type": store.type, "location": store.location,
            "options": dict(store.options or {}), "created_at": store.created_at}
    problem = stored_definition_problem(store.options)
    if problem:
        body.update(options={}, invalid=problem)
    return body


def pipeline_json(pipeline: Pipeline) -> dict[str, Any]:
    """A pipeline; ``activities`` ``[]`` and ``invalid`` for one that cannot be shown."""
    body = {"name": pipeline.name, "gateway": pipeline.gateway.name,
            "activities": list(pipeline.activities), "created_at": pipeline.created_at}
    problem = stored_definition_problem(pipeline.activities)
    if problem:
        body.update(activities=[], invalid=problem)
    return body


def node_credential_state(node: Node) -> tuple[str, str | None]:
    """(credential status, problem or None): the versions the node holds against its
    gateway's (:mod:`dmg.credstatus`)."""
    held = {str(k): int(v) for k, v in (node.credentials_held or {}).items()}
    current = {c.store: c.version for c in node.gateway.credentials}
    return credential_state(held, current)


def credential_problem(node: Node) -> str | None:
    return node_credential_state(node)[1]


def node_json(node: Node, status: NodeStatus, *, role: str | None = None) -> dict[str, Any]:
    """A node as the API shows it; ``role`` is the role to show (default: the one it reported;
    see :func:`dmg.cloud.service.gateways.node_roles`)."""
    return {
        "name": node.name, "status": status.status, "reasons": list(status.reasons),
        "version": node.version, "role": node.role if role is None else role,
        "running": node.running, "limit": node.limit,
        "cpu_percent": node.cpu_percent, "memory_available": node.memory_available,
        "network_in": node.network_in, "network_out": node.network_out,
        "credential_status": node_credential_state(node)[0], "problems": list(node.problems or []),
        "stores_unreachable": list(node.stores_unreachable or []), "draining": node.draining,
        "last_heartbeat": node.last_heartbeat, "registered_at": node.registered_at,
        "encryption": node.encryption or "", "sized_by": node.sized_by or "",
        "upgrade": node.upgrade or "",
        # The node's own figures (its process tree; its copies' bytes), beside the host's above.
        "proc_cpu_percent": node.proc_cpu_percent or 0.0, "proc_mem_bytes": node.proc_mem_bytes or 0,
        "moved_in_bytes": node.moved_in_bytes or 0, "moved_out_bytes": node.moved_out_bytes or 0,
        "config": dict(node.config or {}),
    }


def shard_json(shard: Shard) -> dict[str, Any]:
    return {
        "id": shard.id, "index": shard.index, "status": shard.status, "node": shard.node,
        "attempt": shard.attempt, "files": shard.files, "bytes": shard.bytes,
        "files_total": shard.files_total, "bytes_total": shard.bytes_total,
        "queued_at": shard.queued_at, "started_at": shard.started_at, "ended_at": shard.ended_at,
        "waited": (shard.started_at - shard.queued_at) if shard.started_at is not None else None,
        "wait_reason": shard.wait_reason, "error": shard.error,
    }


def activity_run_json(activity_run: ActivityRun | Any, *, shards: bool = True,
                      parts: Sequence[Shard | Any] | None = None) -> dict[str, Any]:
    """``activity_run``: the ORM object, or any row with its columns as attributes, with
    ``parts`` its shards (by index) then."""
    parts = activity_run.shards if parts is None else parts
    files = sum(s.files for s in parts)
    size = sum(s.bytes for s in parts)
    elapsed = None
    if activity_run.started_at is not None and activity_run.ended_at is not None:
        elapsed = activity_run.ended_at - activity_run.started_at
    body: dict[str, Any] = {
        "id": activity_run.id, "run_id": activity_run.run_id, "name": activity_run.name,
        "status": activity_run.status, "error": activity_run.error,
        "source": activity_run.spec.get("source"), "sink": activity_run.spec.get("sink"),
        "files": files, "bytes": size,
        "files_total": sum(s.files_total for s in parts), "bytes_total": sum(s.bytes_total for s in parts),
        "shard_count": len(parts), "nodes": sorted({s.node for s in parts if s.node}),
        "claimed_by": activity_run.claimed_by, "epoch": activity_run.claim_epoch,
        "queued_at": activity_run.queued_at, "claimed_at": activity_run.claimed_at,
        "started_at": activity_run.started_at, "ended_at": activity_run.ended_at,
        "throughput": (size / elapsed) if elapsed else None,
    }
    if shards:
        body["shards"] = [shard_json(s) for s in parts]
    return body


def run_json(run: Run, *, shards: bool = True,
             activity_runs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``activity_runs``: their JSON when the caller built it (default: from ``run``'s)."""
    if activity_runs is None:
        activity_runs = [activity_run_json(a, shards=shards) for a in run.activity_runs]
    return {
        "id": run.id, "pipeline": run.pipeline.name, "gateway": run.gateway.name,
        "status": run.status, "created_at": run.created_at, "started_at": run.started_at,
        "ended_at": run.ended_at, "files": sum(a["files"] for a in activity_runs),
        "bytes": sum(a["bytes"] for a in activity_runs), "activity_runs": activity_runs,
    }
