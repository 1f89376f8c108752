"""Registering a node with its own key pair, in a data dir that serves one gateway.

Before the cloud is asked, the node's key pair is made in its directory (``node.key``,
0600; :class:`~dmg.credentials.vault.NodeVault`) and its public half goes with the
request. A data dir that already holds a node of gateway A sends A's id, so the cloud
refuses a key of gateway B before registering anything; the refusal names A and the
way out (``dmg node reset``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dmg import registration as local_registration
from dmg.cloud.client import CloudClient
from dmg.credentials.backup import refuse_other_gateway
from dmg.credentials.vault import NodeVault
from dmg.errors import Conflict


def data_dir_gateway(data_dir: Path) -> local_registration.NodeRegistration | None:
    """A registration of ``data_dir`` that carries a gateway id (None: none does)."""
    for name in local_registration.registered_names(data_dir):
        try:
            reg = local_registration.load(data_dir, name)
        except Exception:  # a damaged registration says nothing about the gateway
            continue
        if reg.gateway_id:
            return reg
    return None


def register_with_key(client: CloudClient, data_dir: Path, *, key: str, name: str,
                      version: str) -> dict[str, Any]:
    """Register node ``name`` (its public key made first); -> the cloud's answer."""
    public = NodeVault(local_registration.node_dir(data_dir, name)).public_key()
    known = data_dir_gateway(data_dir)
    try:
        body: dict[str, Any] = client.register_node(key=key, name=name, version=version, public_key=public,
                                                    expect_gateway_id=known.gateway_id if known else "")
    except Conflict as exc:
        if known is not None and "another gateway" in exc.message:
            raise Conflict(f"this data dir ({data_dir}) is registered to gateway {known.gateway!r} "
                           f"(node {known.node}); the key is another gateway's",
                           hint="a data dir serves one gateway: run `dmg node reset` to forget it, "
                                "or use another DMG_DATA_DIR") from None
        raise
    refuse_other_gateway(data_dir, str(body["gateway"]), gateway_id=str(body.get("gateway_id") or ""))
    return body
