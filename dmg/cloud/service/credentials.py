"""Credentials in the cloud: names, versions, who holds which, and only ciphertext.

What the cloud keeps per gateway (see README "Credentials"):

- the gateway key's public half (``credential_key``), offered once by the first
  dispatcher that needs one (:func:`offer_gateway_key`: the first offer wins);
- per store, the current version and the secret sealed to that public key where it was
  typed (``dmg credentials set``), which the cloud cannot open;
- per node, its public key (at registration or in a heartbeat) and the versions it
  reports holding (heartbeats).

Users set, list and delete credentials and ask for a re-sync; a node reads its
gateway's versions (:func:`versions_for_node`); the dispatcher reads the sealed blobs
and the nodes' public keys (:func:`sync_view`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dmg.cloud.models import Credential, Gateway
from dmg.cloud.service.gateways import NodeIdentity, get_gateway
from dmg.cloud.service.views import node_credential_state
from dmg.errors import BadInput, Conflict, NotFound

MAX_SEALED = 16 * 1024


def current_versions(gateway: Gateway) -> dict[str, int]:
    return {c.store: c.version for c in gateway.credentials}


# -- users -------------------------------------------------------------------------------
def credential_key(session: Session, gateway_name: str) -> dict[str, Any]:
    gateway = get_gateway(session, gateway_name)
    if not gateway.credential_key:
        raise NotFound(f"gateway {gateway_name!r} has no credential key yet",
                       hint="start one of its nodes (`dmg node start`): its dispatcher makes the key")
    return {"gateway": gateway.name, "public_key": gateway.credential_key}


def set_credential(session: Session, gateway_name: str, store: str, *, sealed: str, sealed_to: str,
                   now: float) -> dict[str, Any]:
    """Record a new version of ``store``'s credential (sealed to ``sealed_to``, which must be
    the gateway's current key: Conflict otherwise)."""
    gateway = get_gateway(session, gateway_name)
    if not sealed or len(sealed) > MAX_SEALED:
        raise BadInput(f"the sealed credential must be 1 to {MAX_SEALED} characters")
    if sealed_to != gateway.credential_key:
        raise Conflict(f"the credential was sealed to a key that is not gateway {gateway.name!r}'s",
                       hint="the gateway key changed meanwhile; run the command again")
    row = session.scalar(select(Credential).where(Credential.gateway_id == gateway.id,
                                                  Credential.store == store))
    if row is None:
        row = Credential(gateway_id=gateway.id, store=store, version=0, sealed="", sealed_to="", set_at=now)
        session.add(row)
    row.version += 1
    row.sealed, row.sealed_to, row.set_at = sealed, sealed_to, now
    session.flush()
    return {"gateway": gateway.name, "store": store, "version": row.version, "set_at": now}


def list_credentials(session: Session, gateway_name: str) -> dict[str, Any]:
    """``{gateway, public_key, credentials: [{store, version, set_at, nodes: {node: version|None}}],
    nodes: [{name, credential_status}]}`` (never a blob)."""
    gateway = get_gateway(session, gateway_name)
    rows = []
    for cred in gateway.credentials:
        holders = {n.name: (n.credentials_held or {}).get(cred.store) for n in gateway.nodes}
        rows.append({"store": cred.store, "version": cred.version, "set_at": cred.set_at, "nodes": holders})
    nodes = [{"name": n.name, "credential_status": node_credential_state(n)[0]} for n in gateway.nodes]
    return {"gateway": gateway.name, "public_key": gateway.credential_key, "credentials": rows,
            "nodes": nodes}


def delete_credential(session: Session, gateway_name: str, store: str) -> None:
    gateway = get_gateway(session, gateway_name)
    row = session.scalar(select(Credential).where(Credential.gateway_id == gateway.id,
                                                  Credential.store == store))
    if row is None:
        raise NotFound(f"gateway {gateway.name!r} has no credential for store {store!r}",
                       hint=f"list them with `dmg credentials list --gateway {gateway.name}`")
    session.delete(row)
    session.flush()


def request_sync(session: Session, gateway_name: str) -> dict[str, Any]:
    gateway = get_gateway(session, gateway_name)
    gateway.credential_sync = int(gateway.credential_sync or 0) + 1
    session.flush()
    return {"gateway": gateway.name, "sync": gateway.credential_sync}


# -- nodes -------------------------------------------------------------------------------
def _gateway_of(session: Session, node: NodeIdentity) -> Gateway:
    gateway = session.get(Gateway, node.gateway_id)
    if gateway is None:
        raise NotFound("the node's gateway no longer exists")
    return gateway


def versions_for_node(session: Session, node: NodeIdentity) -> dict[str, Any]:
    """What a node needs to know its own state: ``{public_key, credentials: {store: version},
    sync}``."""
    gateway = _gateway_of(session, node)
    return {"public_key": gateway.credential_key, "credentials": current_versions(gateway),
            "sync": int(gateway.credential_sync or 0)}


def sync_view(session: Session, node: NodeIdentity) -> dict[str, Any]:
    """What the dispatcher re-seals from: ``{public_key, sync, credentials: [{store, version,
    sealed, sealed_to}], nodes: [{name, public_key}]}`` (ciphertext only)."""
    gateway = _gateway_of(session, node)
    return {
        "public_key": gateway.credential_key, "sync": int(gateway.credential_sync or 0),
        "credentials": [{"store": c.store, "version": c.version, "sealed": c.sealed,
                         "sealed_to": c.sealed_to} for c in gateway.credentials],
        "nodes": [{"name": n.name, "public_key": n.public_key} for n in gateway.nodes],
    }


def offer_gateway_key(session: Session, node: NodeIdentity, public_key: str) -> dict[str, Any]:
    """Record ``public_key`` as the gateway key unless it has one; -> the gateway's key."""
    gateway = _gateway_of(session, node)
    if not gateway.credential_key:
        gateway.credential_key = public_key
        session.flush()
    return {"public_key": gateway.credential_key}
