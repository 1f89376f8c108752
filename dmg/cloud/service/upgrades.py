"""Upgrades asked of nodes: the cloud's side of ``dmg node upgrade`` / ``dmg gateway upgrade``.

The request travels cloud -> node by the node's own channel, the answer to its heartbeat:

1. a user asks (:func:`request_upgrade`): the node's ``upgrade`` becomes ``requested``;
   every heartbeat answer says ``upgrade: true`` while it is;
2. the node takes it up (:mod:`workers.agent.upgrade`): its beats say ``upgrading``; the
   cloud records ``upgrading`` and stops asking;
3. the node's next process (restarted on the installed version) beats without
   ``upgrading``: the upgrade is done, ``upgrade`` is "" again.

While ``requested`` or ``upgrading`` the node shows Upgrading (unless Offline). Only a user
token asks (the route is in the users' router); a node cannot ask anything of another node.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dmg.cloud.models import Node
from dmg.errors import Conflict, NotFound
from dmg.status import OFFLINE

UPGRADE_REQUESTED = "requested"
UPGRADE_RUNNING = "upgrading"


def upgrade_after_beat(upgrade: str, *, upgrading: bool) -> str:
    """The node's upgrade state after a heartbeat that says (or not) it is ``upgrading``."""
    if upgrading:
        return UPGRADE_RUNNING
    if upgrade == UPGRADE_RUNNING:  # a beat of its next process: done
        return ""
    return upgrade


def request_upgrade(session: Session, gateway_name: str, node_name: str, *, now: float,
                    offline_after: float) -> dict[str, Any]:
    """Ask node ``node_name`` to upgrade; -> the node (status Upgrading). Idempotent while
    asked. NotFound for an unknown node; Conflict when it is Offline (it cannot take the
    request up) or another node of its gateway is upgrading (one node at a time, so the
    others keep moving data)."""
    from dmg.cloud.service.gateways import get_gateway, node_roles, node_statuses
    from dmg.cloud.service.views import node_json

    gateway = get_gateway(session, gateway_name)
    node = session.scalar(select(Node).where(Node.gateway_id == gateway.id, Node.name == node_name))
    if node is None:
        raise NotFound(f"node {node_name!r} is not registered in gateway {gateway_name!r}",
                       hint=f"list its nodes with `dmg node list --gateway {gateway_name}`")
    statuses = node_statuses(gateway, now=now, offline_after=offline_after)
    if not node.upgrade and statuses[node.id].status == OFFLINE:
        raise Conflict(f"node {node_name!r} is Offline ({'; '.join(statuses[node.id].reasons)}): "
                       "it cannot take an upgrade up",
                       hint=f"start it (`dmg node start --name {node_name}`), or upgrade it by hand")
    busy = [n.name for n in gateway.nodes if n.id != node.id and n.upgrade
            and statuses[n.id].status != OFFLINE]
    if busy:
        raise Conflict(f"node {busy[0]!r} of gateway {gateway_name!r} is upgrading: one node "
                       "upgrades at a time", hint="wait until it is back (`dmg node list`)")
    if not node.upgrade:
        node.upgrade = UPGRADE_REQUESTED
    session.flush()
    statuses = node_statuses(gateway, now=now, offline_after=offline_after)
    roles = node_roles(gateway, statuses, now=now)
    return node_json(node, statuses[node.id], role=roles[node.id])
