"""Reports of a removed node, relayed by its gateway's dispatcher.

A node removed at the cloud while it runs a shard may commit that shard just as its
token stops working: its ``succeeded`` report and file results are then refused, and
without them the shard would stay ``running`` at the cloud and its run would never
end. Such a node is still in its site, so it hands the reports it cannot deliver to
the site's Redis (:mod:`workers.run.outbox`), and the dispatcher sends them with its
own token (:mod:`dispatcher.reports`), each item naming the removed node
(``relayed_for``) and the dispatcher's site epoch.

The cloud takes a relayed item only when all of these hold, and then checks it
exactly as it would have checked the removed node's own report (the attempt must be
that node's, a newer attempt refuses it):

- the sender is the gateway's current dispatcher under that epoch
  (:func:`dmg.cloud.service.leader.dispatcher_epoch`: NotDispatcher or StaleAttempt
  otherwise);
- the named node is no longer a node of the gateway (PermissionDenied otherwise: a
  node that is still registered reports its own work).

So no node can act for another through this path: only the lease holder relays, and
only for a node the cloud no longer takes reports from.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dmg.cloud.models import Node
from dmg.cloud.schemas import ReportItem
from dmg.cloud.service import leader
from dmg.cloud.service.gateways import NodeIdentity
from dmg.errors import BadInput, PermissionDenied

#: The node id of a relayed identity: the removed node's row is gone.
REMOVED_NODE_ID = 0


def relayed_identity(session: Session, sender: NodeIdentity, item: ReportItem, *, now: float,
                     ttl: float, checked: set[Any]) -> NodeIdentity:
    """The identity of the removed node ``item`` is relayed for (see the module docstring)."""
    name, epoch = item.relayed_for, item.epoch
    if name is None or epoch is None:
        raise BadInput("a relayed item names the removed node and carries the dispatcher's epoch")
    if ("dispatcher", epoch) not in checked:
        leader.dispatcher_epoch(session, sender, epoch, now=now, ttl=ttl)
        checked.add(("dispatcher", epoch))
    if ("removed", name) not in checked:
        if session.scalar(select(Node.id).where(Node.gateway_id == sender.gateway_id,
                                                Node.name == name)) is not None:
            raise PermissionDenied(f"node {name!r} is a node of gateway {sender.gateway!r}: it reports "
                                   "its own work", hint="only a removed node's reports are relayed")
        checked.add(("removed", name))
    return NodeIdentity(node_id=REMOVED_NODE_ID, node=name, gateway_id=sender.gateway_id,
                        gateway=sender.gateway)
