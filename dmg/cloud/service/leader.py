"""The cloud-side dispatcher lease: the cloud issues the epochs it fences with.

A site elects its dispatcher with a Redis lease whose epoch (the *site epoch*) the
site's Redis counts (:mod:`dispatcher.lease`). The cloud never fences with that number
— any node, or a stolen node token, could send ``2**62`` — but with its own *cloud
epoch* (``gateways.max_epoch``), which only the cloud increments and which activity
runs record as their ``claim_epoch``. Every dispatcher call (claim, plan, failure,
``placed`` report, nodes-gone) names the caller's site epoch S; :func:`dispatcher_epoch`
maps (token's node N, S) to a cloud epoch:

- N holds the cloud lease with S: its cloud epoch; the lease is extended by the TTL.
- N holds it with a newer S (it won the site lease again): a new cloud epoch, max + 1.
- N holds it with an older S: StaleAttempt (an old claimer thread of the same node).
- The lease is free (never held, its holder removed, or released when the holder's
  long-poll connection closed) or expired (no call from its holder for one TTL):
  N takes it with a new cloud epoch, max + 1, whatever S it names.
- Another node holds it and is live: a claim waits (its long-poll answers nothing
  until the lease frees), whatever S it names, so a forged S never makes an honest
  dispatcher give its site lease up. Anything else is refused: StaleAttempt when S
  is not newer than the holder's (a dispatcher that lost its site lease),
  :class:`LeaseHeld` (Retryable, 503) when it is (the previous dispatcher died; its
  cloud lease ends within one TTL).

So a forged S never sticks: it is stored only as the holder's S, never compared
once its holder stops calling, and the next holder's cloud epoch is max + 1 whatever
S was. The most one node can hold its gateway up is the lease while it keeps calling
as the dispatcher, and one TTL after it stops or is removed.
"""

from __future__ import annotations

import logging

from sqlalchemy import bindparam, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from dmg.cloud.models import Gateway, Node
from dmg.cloud.service.gateways import NodeIdentity
from dmg.errors import Retryable, StaleAttempt

log = logging.getLogger(__name__)


class NotDispatcher(StaleAttempt):
    """The caller is not (or no longer) its gateway's dispatcher at the cloud: what it
    asked as the dispatcher is refused, and stays to be asked by the next one."""


class LeaseHeld(Retryable):
    """Another node holds the gateway's cloud-side dispatcher lease (for at most one TTL more)."""


class LeaseBusy(Retryable):
    """Another transaction reads the gateway's lease just as this one would take it (the
    caller's transaction can be tried again at once)."""


#: The gateway row read afresh, locked for update or shared; built once (every dispatcher
#: call reads it: building the statement each time cost about as much as running it).
_LOCKED = {shared: select(Gateway).where(Gateway.id == bindparam("gateway_id"))
           .with_for_update(read=shared).execution_options(populate_existing=True)
           for shared in (False, True)}


def _locked_gateway(session: Session, gateway_id: int, *, shared: bool = False) -> Gateway:
    """The gateway row read afresh and locked (PostgreSQL ``FOR UPDATE``, or ``FOR SHARE``
    when ``shared``: many readers of the lease at once, none while it changes)."""
    gateway = session.scalar(_LOCKED[shared], {"gateway_id": gateway_id})
    if gateway is None:  # the token's gateway: removed meanwhile
        raise StaleAttempt("the gateway no longer exists")
    return gateway


def _holder_alive(session: Session, gateway: Gateway, *, now: float) -> bool:
    if gateway.leader_node_id is None or now >= gateway.leader_until:
        return False
    return session.get(Node, gateway.leader_node_id) is not None


def dispatcher_epoch(session: Session, node: NodeIdentity, site_epoch: int, *, now: float,
                     ttl: float, claiming: bool = False) -> int:
    """The cloud epoch of ``node`` acting as its gateway's dispatcher with ``site_epoch``;
    takes or extends the cloud lease (see the module docstring). Raises StaleAttempt or
    LeaseHeld; ``claiming``: LeaseHeld whenever another node's lease runs (a claim waits,
    whatever epoch the holder named).

    Most calls find the caller holding the lease with ``site_epoch`` and more than half a
    TTL left: they only read the lease, under a shared lock (PostgreSQL ``FOR SHARE``), so
    the dispatcher's plans, placements and claims through several cloud workers do not
    queue on the gateway's row, while a lease change (``FOR UPDATE``) waits for them and
    they for it: a batch whose epoch a committed lease change made stale is still
    refused. The row is locked for update (``NOWAIT``) only to take or extend the lease:
    when another transaction reads it just then, an extension waits for the holder's next
    call and a take is Retryable (the caller sends again), instead of two readers
    deadlocking on the upgrade."""
    gateway = _locked_gateway(session, node.gateway_id, shared=True)
    if gateway.leader_node_id == node.node_id and gateway.leader_until > 0:
        if site_epoch == gateway.leader_site_epoch:
            if gateway.leader_until - now <= ttl / 2 and _lock_for_update(session, gateway):
                gateway.leader_until = now + ttl
            return gateway.max_epoch  # nobody can take it while this transaction reads it
        if site_epoch < gateway.leader_site_epoch:
            raise NotDispatcher(f"dispatcher epoch {site_epoch} is older than this node's epoch "
                                f"{gateway.leader_site_epoch}",
                                hint="another claimer of this node holds the dispatcher lease")
    elif _holder_alive(session, gateway, now=now):
        if site_epoch <= gateway.leader_site_epoch and not claiming:
            raise NotDispatcher(f"dispatcher epoch {site_epoch} is not newer than the gateway's "
                                f"dispatcher's", hint="another node holds the dispatcher lease; "
                                "this one must stop dispatching")
        raise LeaseHeld("the gateway's previous dispatcher still holds the cloud's lease",
                        hint=f"it ends within {ttl:g} s unless that node calls again")
    if not _lock_for_update(session, gateway):  # the row did not change: this transaction read it
        raise LeaseBusy("another request reads the gateway's dispatcher lease now", hint="send again")
    gateway.max_epoch += 1
    gateway.leader_node_id = node.node_id
    gateway.leader_site_epoch = site_epoch
    gateway.leader_until = now + ttl
    log.info("dispatcher lease at the cloud taken gateway=%s node=%s epoch=%d site_epoch=%d",
             node.gateway, node.node, gateway.max_epoch, site_epoch)
    return gateway.max_epoch


def _lock_for_update(session: Session, gateway: Gateway) -> bool:
    """Lock the gateway's row (read under ``FOR SHARE`` by this transaction) for update, at
    once or not at all (``FOR UPDATE NOWAIT`` in a savepoint) -> False when another
    transaction reads it now: two readers that both waited to upgrade would deadlock
    (PostgreSQL aborts one after a second; seen under two workers). SQLite: True at once (its
    one writer holds the database: the savepoint and the SELECT would be three statements
    for nothing)."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    try:
        with session.begin_nested():
            session.execute(select(Gateway).where(Gateway.id == gateway.id).with_for_update(nowait=True)
                            .execution_options(populate_existing=True))
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
            return False
        raise
    return True


def current_dispatcher(session: Session, node: NodeIdentity) -> bool:
    """True when ``node`` holds its gateway's cloud lease (expired or not, while no one
    else took it)."""
    gateway = session.get(Gateway, node.gateway_id)
    return gateway is not None and gateway.leader_node_id == node.node_id and gateway.leader_until > 0


def release(session: Session, node: NodeIdentity, site_epoch: int) -> bool:
    """Free the cloud lease if ``node`` holds it with ``site_epoch`` (its long-poll's
    connection closed: the process is gone or stopping); True if freed."""
    gateway = _locked_gateway(session, node.gateway_id)
    if gateway.leader_node_id != node.node_id or gateway.leader_site_epoch != site_epoch:
        return False
    gateway.leader_until = 0.0
    log.info("dispatcher lease at the cloud released gateway=%s node=%s", node.gateway, node.node)
    return True
