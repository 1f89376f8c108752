"""Node and gateway status rules (DESIGN.md, "Status rules").

Node status, worst first: Offline, Upgrading, Inactive, Limited, Online. Every
status other than Online comes with its reasons in words.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dmg.version import parse

OFFLINE = "Offline"
UPGRADING = "Upgrading"
INACTIVE = "Inactive"
LIMITED = "Limited"
ONLINE = "Online"
NEEDS_REGISTRATION = "Needs Registration"

NODE_STATUSES = (OFFLINE, UPGRADING, INACTIVE, LIMITED, ONLINE)  # worst first
#: Why a node whose processes all lost their broker connection is Offline (dmg.presence).
PROCESS_GONE = "its processes are gone (no connection to the site broker)"


@dataclass(frozen=True)
class NodeStatus:
    status: str
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "reasons": list(self.reasons)}


def node_status(
    *,
    last_heartbeat: float | None,
    now: float,
    offline_after: float,
    version: str,
    gateway_version: str | None,
    draining_for_upgrade: bool = False,
    config_matches_majority: bool = True,
    problems: Sequence[str] = (),
) -> NodeStatus:
    """The status of one node from its last heartbeat and what it reported.

    ``problems`` are connectivity problems the node reported itself (cloud,
    broker or credential sync unreachable); they make it Limited.
    """
    if last_heartbeat is None:
        return NodeStatus(OFFLINE, ("never sent a heartbeat",))
    silent = now - last_heartbeat
    if silent > offline_after:
        reason = f"no heartbeat for {silent:.0f} s (threshold {offline_after:.0f} s)"
        return NodeStatus(OFFLINE, (reason,))
    if draining_for_upgrade:
        return NodeStatus(UPGRADING, ("draining for an update",))
    if not config_matches_majority:
        return NodeStatus(INACTIVE, ("its configuration differs from the other nodes'",))
    reasons = list(problems)
    if gateway_version and parse(version) != parse(gateway_version):
        reasons.append(f"runs version {version}, the gateway runs {gateway_version}")
    if reasons:
        return NodeStatus(LIMITED, tuple(reasons))
    return NodeStatus(ONLINE)


def gateway_status(node_statuses: Iterable[str]) -> str:
    """Needs Registration (no node), Online (all Online), Offline (none Online), else Limited."""
    statuses = list(node_statuses)
    if not statuses:
        return NEEDS_REGISTRATION
    online = sum(1 for s in statuses if s == ONLINE)
    if online == len(statuses):
        return ONLINE
    if online == 0:
        return OFFLINE
    return LIMITED
