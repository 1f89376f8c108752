r"""The ``\\localhost`` trap: a ``file`` store on a path only one node may see.

On a gateway of several nodes every node may be given work on a ``file`` store,
so its location must be a share mounted at the same path on every node. The
cloud cannot see the nodes' disks; it warns when a location looks node-local:
any plain path (``/data/in``, ``~/in``, ``C:\in``, ``file:///in``) and any UNC path
to the machine itself (``\\localhost\share``, ``\\127.0.0.1\share``), unless the
store's options say ``"shared": true`` (the user vouches for a shared mount).
Nodes check for themselves (they report a store they cannot reach); these
warnings only tell the user early.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from dmg.cloud.models import Store

_UNC = re.compile(r"^(?:\\\\|//)(?P<host>[^\\/]+)")
_SELF = {"localhost", "127.0.0.1", "::1", "[::1]", ".", "?"}


def node_local(store: Store) -> bool:
    """True for a ``file`` store whose location may exist on one node only."""
    options = store.options or {}
    if store.type != "file" or options.get("shared") is True:
        return False
    location = store.location.strip()
    if location.lower().startswith("file:"):
        location = location[len("file:"):]
        if location.startswith("//") and not location.startswith("///"):
            location = "//" + location[2:]  # file://host/share is a UNC path
        else:
            location = "/" + location.lstrip("/")
    unc = _UNC.match(location)
    if unc is None:
        return True
    return unc.group("host").lower() in _SELF


def warning(store: Store, *, gateway: str, nodes: int) -> str:
    return (f"store {store.name!r}: local path {store.location!r} may not be visible to every node "
            f"of gateway {gateway!r} ({nodes} nodes): use a shared mount at the same path on every "
            r"node, like \\ServerName\share rather than \\localhost, and say so with the store option "
            '"shared": true')


def warnings_for(stores: Iterable[Store], *, gateway: str, nodes: int) -> list[str]:
    """One warning per node-local ``file`` store, when the gateway has several nodes."""
    if nodes < 2:
        return []
    return [warning(s, gateway=gateway, nodes=nodes) for s in stores if node_local(s)]


def gateway_sizes(gateways: Iterable[Any]) -> list[tuple[str, int]]:
    """``(name, node count)`` of the gateways with several nodes, largest first."""
    sizes = [(str(g.name), len(g.nodes)) for g in gateways]
    return sorted((s for s in sizes if s[1] > 1), key=lambda s: (-s[1], s[0]))
