"""Upgrading a gateway's nodes one at a time, from outside the site (user token).

:func:`upgrade_node` asks the cloud to upgrade one node
(:mod:`dmg.cloud.service.upgrades`) and waits until it is back: its next process beat
(the upgrade is no longer pending), it can take work (a job limit above 0), and it is
Online, or Limited only because its version differs from the gateway's (the first node
of a roll runs a version the majority does not run yet). It must come back on a newer
version than it ran: the same version means nothing newer was installed on it.

:func:`roll` does that for every node of a gateway in turn, the dispatcher last (it
hands its lease over once, not at every step), and moves to the next node only when this
one is back; the first node that does not come back stops the roll with an error naming
it. Nodes already on the highest version while others run older ones are skipped (a roll
started again after a failure goes on where it stopped).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from dmg.errors import Fatal, NotFound, Retryable
from dmg.status import DISPATCHER, LIMITED, ONLINE
from dmg.version import parse, version_reason

#: Seconds between two looks at an upgrading node.
POLL = 0.5


class UpgradeClient(Protocol):
    """The part of :class:`dmg.cloud.client.CloudClient` a roll uses (user token)."""

    def list_nodes(self, gateway: str) -> list[dict[str, Any]]: ...

    def upgrade_node(self, gateway: str, node: str) -> dict[str, Any]: ...

    def gateway(self, name: str) -> dict[str, Any]: ...


def is_back(row: dict[str, Any], *, gateway_version: str | None) -> bool:
    """True when the node ``row`` (as the API lists it) is back from an upgrade and takes work."""
    if row.get("upgrade") or not int(row.get("limit") or 0):
        return False
    if row.get("status") == ONLINE:
        return True
    only_version = [version_reason(str(row.get("version") or ""), gateway_version)]
    return row.get("status") == LIMITED and list(row.get("reasons") or []) == only_version


def _row(client: UpgradeClient, gateway: str, node: str) -> dict[str, Any]:
    rows = {str(r["name"]): r for r in client.list_nodes(gateway)}
    if node not in rows:
        raise NotFound(f"node {node!r} is not registered in gateway {gateway!r}",
                       hint=f"list its nodes with `dmg node list --gateway {gateway}`")
    return rows[node]


def upgrade_node(client: UpgradeClient, gateway: str, node: str, *, timeout: float,
                 echo: Callable[[str], None] = lambda _line: None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Upgrade ``node`` and wait until it is back (see the module docstring); -> its row.

    Raises Retryable naming the node when it is not back within ``timeout`` s, Fatal when it
    came back on the version it ran before, and what the cloud raises for the request
    (NotFound, Conflict: Offline, or another node upgrading).
    """
    before = str(_row(client, gateway, node).get("version") or "")
    client.upgrade_node(gateway, node)
    echo(f"{node}: upgrading from {before or '?'} (draining, then restarting on the installed version)")
    deadline = clock() + timeout
    row: dict[str, Any] = {}
    while clock() < deadline:
        row = _row(client, gateway, node)
        if is_back(row, gateway_version=client.gateway(gateway).get("version")):
            now = str(row.get("version") or "")
            if before and parse(now) <= parse(before):
                raise Fatal(f"node {node} restarted but still runs {now}: no newer dmg is installed "
                            "on it; the roll stopped",
                            hint="install the new version on that machine (or set DMG_UPGRADE_COMMAND "
                                 "to a command that does), then run the upgrade again")
            echo(f"{node}: back on {now} ({row.get('status')})")
            return row
        sleep(POLL)
    why = "; ".join(str(r) for r in row.get("reasons") or []) or "no reason given"
    raise Retryable(f"node {node} did not come back within {timeout:g} s (now {row.get('status', '?')}: "
                    f"{why}); the roll stopped",
                    hint=f"see that node's log; once it runs again, `dmg gateway upgrade {gateway}` "
                         "goes on with the nodes not upgraded yet")


def roll_order(rows: list[dict[str, Any]]) -> list[str]:
    """The nodes to upgrade, in order: by name, the dispatcher last; nodes already on the
    highest version are left out while some run an older one."""
    versions = [parse(str(r.get("version") or "")) for r in rows]
    top = max(versions, default=())
    mixed = len(set(versions)) > 1
    todo = [r for r, v in zip(rows, versions, strict=True) if not (mixed and v == top)]
    return [str(r["name"]) for r in sorted(todo, key=lambda r: (r.get("role") == DISPATCHER, str(r["name"])))]


def roll(client: UpgradeClient, gateway: str, *, timeout: float,
         echo: Callable[[str], None] = lambda _line: None,
         clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """Upgrade every node of ``gateway`` in turn (:func:`roll_order`); -> the nodes upgraded.
    Stops at the first node that is not back (the error of :func:`upgrade_node`)."""
    order = roll_order(client.list_nodes(gateway))
    if not order:
        raise NotFound(f"gateway {gateway!r} has no node to upgrade",
                       hint="register nodes with `dmg node register`")
    echo(f"rolling upgrade of {gateway}: {', '.join(order)} (gateway version "
         f"{client.gateway(gateway).get('version') or '-'})")
    for node in order:
        upgrade_node(client, gateway, node, timeout=timeout, echo=echo, clock=clock, sleep=sleep)
        echo(f"gateway {gateway} version: {client.gateway(gateway).get('version') or '-'}")
    return order
