"""The cloud's credential routes, called with a :class:`~dmg.cloud.client.CloudClient`
(users: the API token; nodes and the dispatcher: the node token)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from dmg.cloud.client import CloudClient


def _gw(gateway: str) -> str:
    return f"/gateways/{quote(gateway, safe='')}"


# -- users --------------------------------------------------------------------------------
def credential_key(client: CloudClient, gateway: str) -> str:
    return str(client.request("GET", f"{_gw(gateway)}/credential-key")["public_key"])


def set_credential(client: CloudClient, gateway: str, store: str, *, sealed: str,
                   sealed_to: str) -> dict[str, Any]:
    body: dict[str, Any] = client.request("PUT", f"{_gw(gateway)}/credentials/{quote(store, safe='')}",
                                          json={"sealed": sealed, "sealed_to": sealed_to})
    return body


def list_credentials(client: CloudClient, gateway: str) -> dict[str, Any]:
    body: dict[str, Any] = client.request("GET", f"{_gw(gateway)}/credentials")
    return body


def delete_credential(client: CloudClient, gateway: str, store: str) -> None:
    client.request("DELETE", f"{_gw(gateway)}/credentials/{quote(store, safe='')}")


def request_sync(client: CloudClient, gateway: str) -> dict[str, Any]:
    body: dict[str, Any] = client.request("POST", f"{_gw(gateway)}/credentials/sync")
    return body


# -- nodes --------------------------------------------------------------------------------
def node_versions(client: CloudClient) -> dict[str, Any]:
    body: dict[str, Any] = client.request("GET", "/nodes/credentials")
    return body


def sync_view(client: CloudClient) -> dict[str, Any]:
    body: dict[str, Any] = client.request("GET", "/dispatch/credentials")
    return body


def offer_gateway_key(client: CloudClient, public_key: str) -> str:
    return str(client.request("POST", "/dispatch/gateway-key", json={"public_key": public_key})["public_key"])
