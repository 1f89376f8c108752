"""``dmg node backup`` / ``dmg node restore``: a node's identity and secrets in one
password-locked file, to move the node to another machine.

The file holds the node's registration (``node.json``: cloud, gateway, node token) and
its vault (``node.key``, the gateway key and the credentials sealed to it), locked with
:func:`dmg.credentials.sealing.lock_with_password` (argon2id + XSalsa20-Poly1305).
Restoring writes them, mode 0600, into a data dir that holds no registration of another
gateway and none of that node.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from dmg import registration as local_registration
from dmg.credentials.sealing import lock_with_password, unlock_with_password
from dmg.credentials.vault import NodeVault, write_private
from dmg.errors import BadInput, Conflict

FORMAT = "dmg-node-backup-v1"


def backup_bytes(data_dir: Path, node: str, password: str) -> bytes:
    """The locked backup of registered node ``node`` of ``data_dir``."""
    reg = local_registration.load(data_dir, node)
    directory = reg.directory(data_dir)
    files = {"node.json": (directory / "node.json").read_bytes()}
    for path in NodeVault(directory).files():
        files[str(path.relative_to(directory))] = path.read_bytes()
    body = {"format": FORMAT, "node": reg.node, "gateway": reg.gateway,
            "files": {name: base64.b64encode(data).decode() for name, data in files.items()}}
    return lock_with_password(json.dumps(body).encode(), password)


def restore_bytes(data_dir: Path, locked: bytes, password: str, *,
                  what: str) -> local_registration.NodeRegistration:
    """Write the node of a :func:`backup_bytes` file into ``data_dir``; returns its registration.

    BadInput for a wrong password or a damaged file; Conflict when ``data_dir`` already
    holds that node, or a node of another gateway."""
    body = json.loads(unlock_with_password(locked, password, what=what))
    if body.get("format") != FORMAT or not isinstance(body.get("files"), dict):
        raise BadInput(f"{what} is not a dmg node backup")
    node, gateway = str(body["node"]), str(body["gateway"])
    refuse_other_gateway(data_dir, gateway)
    if node in local_registration.registered_names(data_dir):
        raise Conflict(f"node {node!r} is already registered in {data_dir}",
                       hint="restore into a fresh data dir, or run `dmg node reset` first")
    directory = local_registration.node_dir(data_dir, node)
    for name, encoded in body["files"].items():
        target = (directory / name).resolve()
        if directory.resolve() not in target.parents:
            raise BadInput(f"{what} names a file outside the node's directory")
        write_private(target, base64.b64decode(encoded))
    return local_registration.load(data_dir, node)


def refuse_other_gateway(data_dir: Path, gateway: str, *, gateway_id: str = "") -> None:
    """Conflict when ``data_dir`` already holds a node registered to another gateway than
    ``gateway`` (by id when both are known, else by name)."""
    for name in local_registration.registered_names(data_dir):
        try:
            reg = local_registration.load(data_dir, name)
        except (BadInput, TypeError):
            continue
        same = reg.gateway_id == gateway_id if (gateway_id and reg.gateway_id) else reg.gateway == gateway
        if not same:
            raise Conflict(f"this data dir ({data_dir}) is registered to gateway {reg.gateway!r} "
                           f"(node {reg.node})",
                           hint="a data dir serves one gateway: run `dmg node reset` to forget it, "
                                "or use another DMG_DATA_DIR")


def forget_nodes(data_dir: Path) -> list[str]:
    """Remove every node registration of ``data_dir`` and its local secrets; returns the names."""
    names = local_registration.registered_names(data_dir)
    root = data_dir / "nodes"
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        if directory.is_dir():
            NodeVault(directory).forget()
            (directory / "node.json").unlink(missing_ok=True)
    return names
