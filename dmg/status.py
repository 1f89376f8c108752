"""Node and gateway status rules (DESIGN.md, "Status rules").

Node status, worst first: Offline, Upgrading, Inactive, Limited, Online. Every
status other than Online comes with its reasons in words. A node is Offline when
its heartbeat is older than the threshold, when its last heartbeat said it stopped
(a clean shutdown: :data:`STOPPED`), or when its worker pool is not running
(:data:`POOL_NOT_RUNNING`: it cannot run a shard, whatever else it reports).

Gateway status (:func:`gateway_state`): Needs Registration (no node), Online (every
node Online), Offline only when no node can do work (none is Online or Limited),
else Limited; the reasons name each node that is not Online and why. The reference
product says "Offline: no node in online status"; dmg's Limited node (an unused
store unreachable, a short broker outage) still moves data, so a gateway of such
nodes is Limited, not Offline.

Role (:func:`dispatcher_of`): exactly one node shows ``dispatcher``: of the nodes not
Offline that say so, the one with the highest lease epoch (then the latest beat).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dmg.version import version_reason

OFFLINE = "Offline"
UPGRADING = "Upgrading"
INACTIVE = "Inactive"
LIMITED = "Limited"
ONLINE = "Online"
NEEDS_REGISTRATION = "Needs Registration"

NODE_STATUSES = (OFFLINE, UPGRADING, INACTIVE, LIMITED, ONLINE)  # worst first
#: Why a node whose processes all lost their broker connection is Offline (dmg.site.presence).
PROCESS_GONE = "its processes are gone (no connection to the site broker)"
#: The statuses of a node that can run shards.
WORKING = (ONLINE, LIMITED)

STOPPED = "stopped"
POOL_NOT_RUNNING = "worker pool not running"
NO_NODE_WORKS = "no node can do work"

DISPATCHER = "dispatcher"
WORKER = "worker"


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
    stopped: bool = False,
    pool_running: bool = True,
    encryption_mismatch: str = "",
) -> NodeStatus:
    """The status of one node from its last heartbeat and what it reported.

    ``problems`` are connectivity problems the node reported itself (cloud,
    broker or credential sync unreachable); they make it Limited. ``stopped``: its
    last beat said it stopped cleanly; ``pool_running`` False: its worker pool is
    dying or not started; either makes it Offline. ``encryption_mismatch`` (why the
    node's encryption mode differs from its gateway's, see :func:`encryption_mismatch`)
    makes it Inactive.
    """
    if last_heartbeat is None:
        return NodeStatus(OFFLINE, ("never sent a heartbeat",))
    if stopped:
        return NodeStatus(OFFLINE, (STOPPED,))
    silent = now - last_heartbeat
    if silent > offline_after:
        reason = f"no heartbeat for {silent:.0f} s (threshold {offline_after:.0f} s)"
        return NodeStatus(OFFLINE, (reason,))
    if not pool_running:
        return NodeStatus(OFFLINE, (POOL_NOT_RUNNING, *problems))
    if draining_for_upgrade:
        return NodeStatus(UPGRADING, ("draining for an update",))
    if encryption_mismatch:
        return NodeStatus(INACTIVE, (encryption_mismatch,))
    if not config_matches_majority:
        return NodeStatus(INACTIVE, ("its configuration differs from the other nodes'",))
    reasons = list(problems)
    if differs := version_reason(version, gateway_version):
        reasons.append(differs)
    if reasons:
        return NodeStatus(LIMITED, tuple(reasons))
    return NodeStatus(ONLINE)


#: A gateway's encryption modes: node-to-node (Redis) traffic over TLS, or in plain text.
ENCRYPTION_TLS = "tls"
ENCRYPTION_NONE = "none"
ENCRYPTION_MODES = (ENCRYPTION_TLS, ENCRYPTION_NONE)


#: Why a node shows Upgrading while an upgrade asked of it runs (:func:`upgrading_status`).
UPGRADE_REQUESTED_REASON = "upgrade requested: waiting for the node to take it up"
UPGRADE_DRAINING_REASON = "upgrading: its running shards finish, then it restarts on the installed version"


def upgrading_status(status: NodeStatus, upgrade: str, *, version: str) -> NodeStatus:
    """The status of a node that an upgrade was asked of (``upgrade``: ``requested`` or
    ``upgrading``, :mod:`dmg.cloud.service.upgrades`): Upgrading with what it does, unless
    it is Offline (a node that does not come back stays Offline, whatever was asked)."""
    if not upgrade or status.status == OFFLINE:
        return status
    why = UPGRADE_DRAINING_REASON if upgrade == "upgrading" else UPGRADE_REQUESTED_REASON
    return NodeStatus(UPGRADING, (f"{why} (now {version})",))


def encryption_mismatch(node_mode: str, gateway_mode: str) -> str:
    """Why a node whose own mode (does it reach the site broker over TLS?) is not its
    gateway's is Inactive; "" when they agree or the node did not say (an older node)."""
    if not node_mode or node_mode == gateway_mode:
        return ""
    said = ("uses TLS to the site broker" if node_mode == ENCRYPTION_TLS
            else "reaches the site broker in plain text")
    return (f"encryption mode differs: the node {said} ({node_mode}), the gateway's mode is "
            f"{gateway_mode} (set DMG_REDIS_TLS_* and DMG_REDIS_URL to match, or change the "
            "gateway's mode with `dmg gateway encryption`)")


def gateway_state(nodes: Mapping[str, NodeStatus]) -> NodeStatus:
    """The gateway's status and reasons from its nodes' (by name); see the module docstring.

    Each node that is not Online adds ``"<node>: <status> (<reasons>)"``; an Offline
    gateway's reasons start with :data:`NO_NODE_WORKS`.
    """
    if not nodes:
        return NodeStatus(NEEDS_REGISTRATION, ("no node is registered",))
    reasons = tuple(_node_reason(name, s) for name, s in sorted(nodes.items()) if s.status != ONLINE)
    if not reasons:
        return NodeStatus(ONLINE)
    if not any(s.status in WORKING for s in nodes.values()):
        return NodeStatus(OFFLINE, (NO_NODE_WORKS, *reasons))
    return NodeStatus(LIMITED, reasons)


def _node_reason(name: str, status: NodeStatus) -> str:
    why = "; ".join(status.reasons)
    return f"{name}: {status.status}" + (f" ({why})" if why else "")


def gateway_status(node_statuses: Iterable[str]) -> str:
    """The gateway's status alone (see :func:`gateway_state`)."""
    return gateway_state({str(i): NodeStatus(s) for i, s in enumerate(node_statuses)}).status


@dataclass(frozen=True)
class RoleClaim:
    """What a node's last heartbeat said about its role."""

    node: str
    role: str
    epoch: int
    last_heartbeat: float
    status: str


def dispatcher_of(claims: Iterable[RoleClaim]) -> str | None:
    """The one node shown as dispatcher (None: no node that is not Offline claims it)."""
    live = [c for c in claims if c.role == DISPATCHER and c.status != OFFLINE]
    if not live:
        return None
    return max(live, key=lambda c: (c.epoch, c.last_heartbeat, c.node)).node


def shown_role(claim: RoleClaim, dispatcher: str | None) -> str:
    """The role to show for one node: ``dispatcher`` for :func:`dispatcher_of`'s node only;
    a node that claims it otherwise (a dead or superseded dispatcher) shows ``worker``."""
    if claim.node == dispatcher:
        return DISPATCHER
    return WORKER if claim.role == DISPATCHER else claim.role
