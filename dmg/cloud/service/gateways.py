"""Gateways, their keys, and their nodes: registration, heartbeats, status, removal.

Rules (from the reference product):

- A gateway has two keys; either registers a node. Regenerating one revokes it at
  once (registering with it is Unauthorized); nodes already registered stay.
- Node names are unique within a gateway and never change (Conflict).
- A node whose version is lower than the gateway's (the majority version of its
  nodes) cannot register (BadInput); at most ``max_nodes`` nodes (Conflict).
- Nodes authenticate with the token they got at registration; removing a node
  revokes it.
- A registration tells the node its gateway's name and id (:func:`gateway_uid`),
  which the node stamps in its site's Redis (:mod:`dmg.site.identity`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dmg.cloud import keys
from dmg.cloud.models import Gateway, Node
from dmg.cloud.schemas import Heartbeat
from dmg.cloud.service.upgrades import UPGRADE_REQUESTED, upgrade_after_beat
from dmg.cloud.service.views import credential_problem, node_json
from dmg.errors import BadInput, Conflict, NotFound, Unauthorized
from dmg.fingerprint import majority, redact_url
from dmg.inactivity import config_reasons, cut_off, with_inactive
from dmg.proxy import check_proxy_url
from dmg.status import (
    DISPATCHER,
    ENCRYPTION_MODES,
    ENCRYPTION_NONE,
    OFFLINE,
    PROCESS_GONE,
    NodeStatus,
    RoleClaim,
    dispatcher_of,
    encryption_mismatch,
    gateway_state,
    node_status,
    shown_role,
    upgrading_status,
)
from dmg.version import majority_version, registration_refusal


@dataclass(frozen=True)
class NodeIdentity:
    """Who sent a node request (from its token)."""

    node_id: int
    node: str
    gateway_id: int
    gateway: str


# -- gateways ---------------------------------------------------------------------------
def get_gateway(session: Session, name: str) -> Gateway:
    gateway = session.scalar(select(Gateway).where(Gateway.name == name))
    if gateway is None:
        raise NotFound(f"gateway {name!r} does not exist", hint="list gateways with `dmg gateway list`")
    return gateway


def create_gateway(session: Session, box: keys.KeyBox, name: str, *, now: float) -> dict[str, Any]:
    if session.scalar(select(Gateway.id).where(Gateway.name == name)) is not None:
        raise Conflict(f"gateway {name!r} already exists", hint="pick another name")
    key1, key2 = keys.new_gateway_key(), keys.new_gateway_key()
    gateway = Gateway(name=name, key1_encrypted=box.encrypt(key1), key1_hash=keys.sha256(key1),
                      key2_encrypted=box.encrypt(key2), key2_hash=keys.sha256(key2),
                      max_epoch=0, created_at=now)
    session.add(gateway)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"gateway {name!r} already exists", hint="pick another name") from None
    body = gateway_json(gateway, now=now, offline_after=0.0)
    body.update(key1=key1, key2=key2)
    return body


def gateway_keys(session: Session, box: keys.KeyBox, name: str) -> dict[str, str]:
    gateway = get_gateway(session, name)
    return {"key1": box.decrypt(gateway.key1_encrypted), "key2": box.decrypt(gateway.key2_encrypted)}


def regenerate_key(session: Session, box: keys.KeyBox, name: str, which: str) -> dict[str, str]:
    """Replace ``key1`` or ``key2``; the old one stops registering nodes at once."""
    gateway = get_gateway(session, name)
    new = keys.new_gateway_key()
    if which == "key1":
        gateway.key1_encrypted, gateway.key1_hash = box.encrypt(new), keys.sha256(new)
    elif which == "key2":
        gateway.key2_encrypted, gateway.key2_hash = box.encrypt(new), keys.sha256(new)
    else:
        raise BadInput(f"key must be key1 or key2, not {which!r}")
    session.flush()
    return {"key1": box.decrypt(gateway.key1_encrypted), "key2": box.decrypt(gateway.key2_encrypted)}


def set_encryption(session: Session, name: str, mode: str, *, now: float,
                   offline_after: float) -> dict[str, Any]:
    """Set gateway ``name``'s encryption mode; -> the gateway. Only while it has at most one
    node (the reference product's rule): Conflict otherwise, saying to remove nodes first.
    Setting the mode it has is a no-op at any size."""
    if mode not in ENCRYPTION_MODES:
        raise BadInput(f"encryption mode must be one of {', '.join(ENCRYPTION_MODES)}, not {mode!r}")
    gateway = get_gateway(session, name)
    if (gateway.encryption_mode or ENCRYPTION_NONE) != mode and len(gateway.nodes) > 1:
        raise Conflict(
            f"gateway {name!r} has {len(gateway.nodes)} nodes; its encryption mode can change only "
            "while it has one node",
            hint=f"remove every node but one (`dmg node remove NAME --gateway {name}`), change the mode, "
                 "then register the others again with the new setting")
    gateway.encryption_mode = mode
    session.flush()
    return gateway_json(gateway, now=now, offline_after=offline_after)


def set_proxy(session: Session, name: str, url: str, *, now: float,
               offline_after: float) -> dict[str, Any]:
    """Set (or, with "", clear) gateway ``name``'s HTTP proxy; -> the gateway (the proxy
    shown without credentials). BadInput for a URL that is not ``http(s)://host[:port]``.
    Every node gets it in its next heartbeat's reply and is Inactive until it applied it."""
    gateway = get_gateway(session, name)
    gateway.proxy = check_proxy_url(url.strip())
    session.flush()
    return gateway_json(gateway, now=now, offline_after=offline_after)


def node_statuses(gateway: Gateway, *, now: float, offline_after: float) -> dict[int, NodeStatus]:
    """Every node's status by node id, as :func:`dmg.status.node_status` rules it, made
    Inactive where its configuration differs or it cannot reach the others through the
    broker (:mod:`dmg.inactivity`)."""
    nodes = list(gateway.nodes)
    version = gateway_version(gateway, now=now)
    mode = gateway.encryption_mode or ENCRYPTION_NONE
    prints = Counter(n.config_fingerprint for n in nodes if n.config_fingerprint and not n.config)
    majority_print = prints.most_common(1)[0][0] if prints else ""
    holder = _lease_holder(gateway, now=now)
    holder_parts = next((dict(n.config) for n in nodes if n.name == holder and n.config), None)
    majority_parts = majority([dict(n.config) for n in nodes if n.config], prefer=holder_parts)
    result: dict[int, NodeStatus] = {}
    for node in nodes:
        problems = [str(p) for p in (node.problems or [])]
        if node.stores_unreachable:
            problems.append("cannot reach store(s) " + ", ".join(map(str, node.stores_unreachable)))
        out_of_sync = credential_problem(node)
        if out_of_sync:
            problems.append(out_of_sync)
        result[node.id] = node_status(
            last_heartbeat=node.last_heartbeat, now=now, offline_after=offline_after,
            version=node.version, gateway_version=version, draining_for_upgrade=node.draining,
            # Only for nodes too old to send named parts (see config_reasons for the others).
            config_matches_majority=not (majority_print and node.config_fingerprint and not node.config
                                         and node.config_fingerprint != majority_print),
            problems=problems, stopped=bool(node.stopped), pool_running=node.pool_running is not False,
            encryption_mismatch=encryption_mismatch(node.encryption or "", mode),
        )
        if node.gone_at is not None and node.gone_at >= (node.last_heartbeat or 0.0):
            result[node.id] = NodeStatus(OFFLINE, (PROCESS_GONE,))
        result[node.id] = upgrading_status(result[node.id], node.upgrade or "", version=node.version)
    heard = {n.name: n.peers_seen for n in nodes if result[n.id].status != OFFLINE}
    partitioned = cut_off(heard, holder=holder)
    for node in nodes:
        reasons = config_reasons(dict(node.config or {}), majority_parts, gateway_proxy=gateway.proxy or "")
        if node.name in partitioned:
            reasons.append(partitioned[node.name])
        result[node.id] = with_inactive(result[node.id], reasons)
    return result


def node_roles(gateway: Gateway, statuses: dict[int, NodeStatus], *, now: float) -> dict[int, str]:
    """The role to show for each node by id: one node at most says ``dispatcher``: the
    holder of the cloud's dispatcher lease while it runs (a heartbeat's epoch is the node's
    word only), else :func:`dmg.status.dispatcher_of` of the heartbeats."""
    claims = {n.id: RoleClaim(node=n.name, role=n.role or "", epoch=int(n.epoch or 0),
                              last_heartbeat=n.last_heartbeat or 0.0, status=statuses[n.id].status)
              for n in gateway.nodes}
    holder = _lease_holder(gateway, now=now)
    live_holder = [c.node for c in claims.values() if c.node == holder and c.status != OFFLINE]
    dispatcher = live_holder[0] if live_holder else dispatcher_of(claims.values())
    return {node_id: shown_role(claim, dispatcher) for node_id, claim in claims.items()}


def gateway_version(gateway: Gateway, *, now: float) -> str | None:
    """The gateway's version (:func:`dmg.version.majority_version`), a tie going to the
    dispatcher-lease holder's version."""
    holder = _lease_holder(gateway, now=now)
    prefer = next((n.version for n in gateway.nodes if n.name == holder), None)
    return majority_version((n.version for n in gateway.nodes), prefer=prefer)


def _lease_holder(gateway: Gateway, *, now: float) -> str | None:
    if gateway.leader_node_id is None or (gateway.leader_until or 0.0) <= now:
        return None
    return next((n.name for n in gateway.nodes if n.id == gateway.leader_node_id), None)


def gateway_json(gateway: Gateway, *, now: float, offline_after: float,
                 nodes: bool = False) -> dict[str, Any]:
    statuses = node_statuses(gateway, now=now, offline_after=offline_after)
    state = gateway_state({n.name: statuses[n.id] for n in gateway.nodes})
    body: dict[str, Any] = {
        "name": gateway.name,
        "status": state.status,
        "reasons": list(state.reasons),
        "version": gateway_version(gateway, now=now),
        "node_count": len(gateway.nodes),
        "encryption": gateway.encryption_mode or ENCRYPTION_NONE,
        # Never the proxy's credentials: shown redacted (dmg.fingerprint.redact_url).
        "proxy": redact_url(gateway.proxy or "") if gateway.proxy else "",
        "created_at": gateway.created_at,
        # The cloud-side dispatcher lease (dmg.cloud.service.leader): its holder while it
        # runs, and the last dispatcher epoch the cloud issued.
        "dispatcher": _lease_holder(gateway, now=now),
        "epoch": gateway.max_epoch,
    }
    if nodes:
        roles = node_roles(gateway, statuses, now=now)
        body["nodes"] = [node_json(n, statuses[n.id], role=roles[n.id]) for n in gateway.nodes]
    return body


def list_gateways(session: Session, *, now: float, offline_after: float,
                  nodes: bool = False) -> list[dict[str, Any]]:
    gateways = session.scalars(select(Gateway).order_by(Gateway.name)).all()
    return [gateway_json(g, now=now, offline_after=offline_after, nodes=nodes) for g in gateways]


def list_nodes(session: Session, gateway_name: str, *, now: float,
               offline_after: float) -> list[dict[str, Any]]:
    gateway = get_gateway(session, gateway_name)
    statuses = node_statuses(gateway, now=now, offline_after=offline_after)
    roles = node_roles(gateway, statuses, now=now)
    return [node_json(n, statuses[n.id], role=roles[n.id]) for n in gateway.nodes]


# -- nodes ------------------------------------------------------------------------------
def register_node(session: Session, *, key: str, name: str, version: str, max_nodes: int,
                  now: float, public_key: str = "", expect_gateway_id: str = "") -> dict[str, Any]:
    """Register node ``name`` with a gateway key; -> ``{gateway, node, token}``.

    With ``expect_gateway_id`` (the data dir's gateway), a key of another gateway is
    refused (Conflict) and nothing is recorded. Either everything is recorded or nothing
    (the caller's transaction rolls back).
    """
    digest = keys.sha256(key)
    gateway = session.scalar(select(Gateway).where(
        (Gateway.key1_hash == digest) | (Gateway.key2_hash == digest)))
    if gateway is None:
        raise Unauthorized("the gateway key is wrong or was regenerated",
                           hint="copy a current key with `dmg gateway keys GATEWAY`")
    if expect_gateway_id and expect_gateway_id != gateway_uid(gateway):
        raise Conflict("this key belongs to another gateway than the one this data dir is "
                       "registered to",
                       hint="a data dir serves one gateway: run `dmg node reset` first, "
                            "or use another data dir")
    taken = session.scalar(select(Node.id).where(Node.gateway_id == gateway.id, Node.name == name))
    if taken is not None:
        raise Conflict(f"node name {name!r} is taken in gateway {gateway.name!r}",
                       hint="node names cannot change; pick another name, or remove the old node first")
    current = gateway_version(gateway, now=now)
    if refusal := registration_refusal(version, current, gateway=gateway.name):
        raise BadInput(refusal, hint=f"install dmg {current} or later on this machine, then "
                                     "register again (or remove every node of the gateway to downgrade it)")
    count = session.scalar(select(func.count()).select_from(Node).where(Node.gateway_id == gateway.id))
    if (count or 0) >= max_nodes:
        raise Conflict(f"gateway {gateway.name!r} already has {count} nodes, the most allowed",
                       hint="remove a node, or raise DMG_MAX_NODES_PER_GATEWAY on the cloud")
    token = keys.new_node_token()
    session.add(Node(gateway_id=gateway.id, name=name, token_hash=keys.sha256(token), version=version,
                     registered_at=now, problems=[], stores_unreachable=[],
                     public_key=public_key, credentials_held={}))
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"node name {name!r} is taken in gateway {gateway.name!r}",
                       hint="pick another name, or remove the old node first") from None
    return {"gateway": gateway.name, "gateway_id": gateway_uid(gateway), "node": name, "token": token}


def gateway_uid(gateway: Gateway) -> str:
    """The gateway's id across clouds: ``<row id>-<12 hex>``, the hex from the row id, name
    and creation time, so two clouds' gateways ``1`` named ``site`` still differ. Stable."""
    digest = hashlib.sha256(f"{gateway.id}\0{gateway.name}\0{gateway.created_at!r}".encode()).hexdigest()
    return f"{gateway.id}-{digest[:12]}"


def authenticate_node(session: Session, token: str) -> NodeIdentity:
    """The node that owns ``token``; Unauthorized if none does (wrong or removed)."""
    if not token:
        raise Unauthorized("this request needs a node token",
                           hint="send `Authorization: Bearer <token>` from the node's registration")
    row = session.execute(
        select(Node.id, Node.name, Gateway.id, Gateway.name).join(Gateway, Node.gateway_id == Gateway.id)
        .where(Node.token_hash == keys.sha256(token))).first()
    if row is None:
        raise Unauthorized("the node token is not valid: the node was removed or never registered",
                           hint="register the node again with `dmg node register`")
    return NodeIdentity(node_id=row[0], node=row[1], gateway_id=row[2], gateway=row[3])


def heartbeat(session: Session, node: NodeIdentity, beat: Heartbeat, *, now: float,
              offline_after: float) -> dict[str, Any]:
    """Record a heartbeat (server time); -> ``{status, reasons, upgrade}`` of the node
    (``upgrade``: an upgrade is asked of it, :mod:`dmg.cloud.service.upgrades`)."""
    row = session.get(Node, node.node_id)
    if row is None:
        raise Unauthorized("the node was removed", hint="register the node again with `dmg node register`")
    row.role = beat.role
    row.running = beat.running
    row.limit = beat.limit
    row.cpu_percent = beat.cpu_percent
    row.memory_available = beat.memory_available
    row.network_in = beat.network_in
    row.network_out = beat.network_out
    if beat.version:
        row.version = beat.version
    row.problems = list(beat.problems)
    row.credential_status = beat.credential_status
    row.stores_unreachable = list(beat.stores_unreachable)
    row.draining = beat.draining
    row.config_fingerprint = beat.config_fingerprint
    row.stopped = beat.stopped
    row.pool_running = beat.pool_running
    row.epoch = beat.epoch if beat.role == DISPATCHER else 0
    if beat.credentials is not None:
        row.credentials_held = dict(beat.credentials)
    if beat.public_key:
        row.public_key = beat.public_key
    row.encryption = beat.encryption
    row.sized_by = beat.sized_by
    row.config = dict(beat.config)
    row.peers_seen = list(beat.peers_seen) if beat.peers_seen is not None else None
    row.proc_cpu_percent = beat.proc_cpu_percent
    row.proc_mem_bytes = beat.proc_mem_bytes
    row.moved_in_bytes = beat.moved_in_bytes
    row.moved_out_bytes = beat.moved_out_bytes
    row.last_heartbeat = now
    row.upgrade = upgrade_after_beat(row.upgrade or "", upgrading=beat.upgrading)
    session.flush()
    status = node_statuses(row.gateway, now=now, offline_after=offline_after)[row.id]
    # The gateway's proxy, in full, to its own node only (it applies it, dmg.proxy).
    return {**status.to_json(), "upgrade": row.upgrade == UPGRADE_REQUESTED, "proxy": row.gateway.proxy or ""}


def nodes_gone(session: Session, reporter: NodeIdentity, names: list[str], *, now: float) -> list[str]:
    """Mark nodes of the reporter's gateway gone (Offline until their next heartbeat); the
    caller fenced the reporter's epoch. A node never marks itself. Returns the names marked."""
    wanted = set(names) - {reporter.node}
    rows = session.scalars(select(Node).where(Node.gateway_id == reporter.gateway_id,
                                              Node.name.in_(sorted(wanted)))).all() if wanted else []
    for row in rows:
        row.gone_at = now
    session.flush()
    return sorted(row.name for row in rows)


def get_node(session: Session, gateway_name: str, node_name: str) -> Node:
    """The node ``node_name`` of gateway ``gateway_name``; NotFound if either is unknown."""
    gateway = get_gateway(session, gateway_name)
    node = session.scalar(select(Node).where(Node.gateway_id == gateway.id, Node.name == node_name))
    if node is None:
        raise NotFound(f"node {node_name!r} is not registered in gateway {gateway_name!r}",
                       hint=f"list its nodes with `dmg node list --gateway {gateway_name}`")
    return node


def remove_node(session: Session, gateway_name: str, node_name: str) -> None:
    node = get_node(session, gateway_name, node_name)
    session.delete(node)
    session.flush()
