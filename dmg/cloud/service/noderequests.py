"""What a user asks of a node from the portal: a new concurrent-job limit, drain, undrain.

The cloud never reaches into a site: it keeps the request (one row per node, the
latest ask of each kind wins) and hands it to the node in the answer to its heartbeat
(``requests: {limit?, drain?}``). The node applies it with the site's own paths (the
``dmg_scale`` pool command, the site's drain flag, as ``dmg scale`` and ``dmg node
drain`` do) and the row is cleared once a heartbeat reports it done. A node that is
down gets it when it comes back.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from dmg.cloud.models import NodeRequest
from dmg.cloud.service.gateways import get_node
from dmg.errors import BadInput

#: The largest limit a user may ask for (the pool's own cap, workers.agent.scaling).
MAX_LIMIT = 1024


def _row(session: Session, node_id: int, *, now: float) -> NodeRequest:
    row = session.get(NodeRequest, node_id)
    if row is None:
        row = NodeRequest(node_id=node_id, requested_at=now)
        session.add(row)
    row.requested_at = now
    return row


def request_limit(session: Session, gateway: str, node: str, limit: int, *, now: float) -> dict[str, Any]:
    """Ask ``node`` to run at most ``limit`` shards at once; BadInput outside 1..1024."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadInput(f"a node's limit must be 1 to {MAX_LIMIT}, not {limit}", hint="give a whole number")
    row = _row(session, get_node(session, gateway, node).id, now=now)
    row.limit = limit
    session.flush()
    return pending_json(row)


def request_drain(session: Session, gateway: str, node: str, drain: bool, *, now: float) -> dict[str, Any]:
    """Ask ``node`` to drain (``drain``) or to take work again."""
    row = _row(session, get_node(session, gateway, node).id, now=now)
    row.drain = drain
    session.flush()
    return pending_json(row)


def pending_json(row: NodeRequest | None) -> dict[str, Any]:
    """``{limit?, drain?}``: what is still asked of the node."""
    if row is None:
        return {}
    body: dict[str, Any] = {}
    if row.limit is not None:
        body["limit"] = row.limit
    if row.drain is not None:
        body["drain"] = row.drain
    return body


def pending(session: Session, node_id: int) -> dict[str, Any]:
    return pending_json(session.get(NodeRequest, node_id))


def settle(session: Session, node_id: int, *, limit: int, draining: bool) -> dict[str, Any]:
    """Drop what the node's latest beat shows done; -> what is still asked of it."""
    row = session.get(NodeRequest, node_id)
    if row is None:
        return {}
    if row.limit is not None and row.limit == limit:
        row.limit = None
    if row.drain is not None and row.drain == draining:
        row.drain = None
    if row.limit is None and row.drain is None:
        session.delete(row)
        session.flush()
        return {}
    session.flush()
    return pending_json(row)
