"""Routes for credentials: users set, list, delete and re-sync (API token); nodes read
versions and the dispatcher reads ciphertext (node token). The cloud never sees a secret."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response

from dmg.cloud.api.auth import Node, Service, require_user
from dmg.cloud.schemas import CredentialSet, GatewayKeyOffer

#: A store (credential) name, as the cloud's store name rule says.
StoreName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", max_length=64)]

users = APIRouter(dependencies=[Depends(require_user)])
nodes = APIRouter()


@users.get("/gateways/{name}/credential-key", tags=["credentials"])
def credential_key(name: str, svc: Service) -> dict[str, Any]:
    """The gateway key's public half, to seal a credential to: ``{gateway, public_key}``;
    404 until the gateway's first dispatcher made it."""
    return svc.credential_key(name)


@users.get("/gateways/{name}/credentials", tags=["credentials"])
def list_credentials(name: str, svc: Service) -> dict[str, Any]:
    """``{gateway, public_key, credentials: [{store, version, set_at, nodes: {node: version}}],
    nodes: [{name, credential_status}]}``; never a secret nor a blob."""
    return svc.list_credentials(name)


@users.put("/gateways/{name}/credentials/{store}", tags=["credentials"])
def set_credential(name: str, store: StoreName, body: CredentialSet, svc: Service) -> dict[str, Any]:
    """Record a new version of a store's credential, sealed to the gateway key where it was
    typed; -> ``{gateway, store, version, set_at}``. 409 when ``sealed_to`` is not the key."""
    return svc.set_credential(name, store, sealed=body.sealed, sealed_to=body.sealed_to)


@users.delete("/gateways/{name}/credentials/{store}", status_code=204, tags=["credentials"])
def delete_credential(name: str, store: StoreName, svc: Service) -> Response:
    svc.delete_credential(name, store)
    return Response(status_code=204)


@users.post("/gateways/{name}/credentials/sync", tags=["credentials"])
def request_sync(name: str, svc: Service) -> dict[str, Any]:
    """Ask the dispatcher to hand every node every credential again: ``{gateway, sync}``."""
    return svc.request_credential_sync(name)


@nodes.get("/nodes/credentials", tags=["nodes"])
def node_credentials(node: Node, svc: Service) -> dict[str, Any]:
    """The node's gateway's credential versions: ``{public_key, credentials: {store: version}, sync}``."""
    return svc.node_credential_versions(node)


@nodes.get("/dispatch/credentials", tags=["dispatch"])
def sync_view(node: Node, svc: Service) -> dict[str, Any]:
    """What the dispatcher re-seals for each node: the sealed credentials and every node's
    public key (ciphertext only)."""
    return svc.credential_sync_view(node)


@nodes.post("/dispatch/gateway-key", tags=["dispatch"])
def offer_gateway_key(body: GatewayKeyOffer, node: Node, svc: Service) -> dict[str, Any]:
    """Offer a gateway key's public half; the first offer wins: -> ``{public_key}``."""
    return svc.offer_gateway_key(node, body.public_key)
