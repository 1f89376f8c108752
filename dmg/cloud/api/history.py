"""Users' route to a node's metrics history (:mod:`dmg.cloud.service.history`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from dmg.cloud.api.auth import Service, require_user

router = APIRouter(dependencies=[Depends(require_user)])

#: The longest look back a request may ask for (seconds).
MAX_SINCE = 400 * 86400.0


@router.get("/gateways/{name}/nodes/{node}/history", tags=["nodes"])
def node_history(name: str, node: str, svc: Service,
                 since: float = Query(default=3600.0, gt=0, le=MAX_SINCE,
                                      description="seconds to look back")) -> dict[str, Any]:
    """The node's metrics over the last ``since`` seconds, oldest first: ``{gateway, node,
    since, samples: [{at, resolution, samples, cpu_percent, memory_available, running,
    limit, network_in, network_out}]}``; ``resolution`` 0 is a heartbeat, 60/600 an
    average over a bucket of that many seconds starting at ``at``."""
    return svc.node_history(name, node, since=since)
