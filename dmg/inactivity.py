"""Why a node is Inactive: its configuration differs, or it cannot reach the other nodes.

Pure rules over what the nodes reported (the cloud applies them, :mod:`dmg.cloud.service.gateways`):

- **Configuration** (:func:`config_reasons`): each part of the node's fingerprint
  (:mod:`dmg.fingerprint`) against the majority's, except the parts the gateway sets
  itself, which are compared with the gateway's value: ``proxy`` here (a node that has not
  applied the gateway's proxy yet is Inactive until it does), ``encryption`` by
  :func:`dmg.status.encryption_mismatch`.
- **Broker partition** (:func:`cut_off`): the cloud hears a node's heartbeat, but the node
  sees none of the other heard nodes' heartbeats in its site broker (Redis): it talks to
  another Redis, or cannot reach the one the others share. Nodes are grouped by whom they
  see; the largest group (then the one holding the dispatcher lease, then by name) is the
  gateway, every heard node outside it is cut off. A node whose broker is unreachable does
  not say whom it sees (it is Limited for that, not Inactive).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from dmg.fingerprint import differences, redact_url
from dmg.status import INACTIVE, LIMITED, ONLINE, NodeStatus

#: Parts the gateway sets (compared with the gateway's value, not the majority's).
GATEWAY_PARTS = ("proxy", "encryption")


def config_reasons(parts: Mapping[str, str], majority: Mapping[str, str], *,
                   gateway_proxy: str) -> list[str]:
    """The words for each part of ``parts`` that differs (empty: none, or an older node
    that sends no parts)."""
    if not parts:
        return []
    reasons = differences(parts, majority, skip=GATEWAY_PARTS)
    wanted = redact_url(gateway_proxy)
    if "proxy" in parts and parts["proxy"] != wanted:
        reasons.insert(0, f"proxy differs: {parts['proxy']} vs the gateway's {wanted} "
                          "(not applied yet: a node applies it from its next heartbeat's reply)")
    return reasons


def cut_off(peers: Mapping[str, Sequence[str] | None], *, holder: str | None = None) -> dict[str, str]:
    """The heard nodes (keys of ``peers``: node -> the nodes it sees, None if unknown) that
    cannot reach the others through the broker, each with the reason in words."""
    heard = set(peers)
    if len(heard) < 2:
        return {}
    groups = {name: frozenset({name} | (set(seen) & heard))
              for name, seen in peers.items() if seen is not None}
    if not groups:
        return {}
    main = max(set(groups.values()), key=lambda g: (len(g), holder in g, sorted(heard - g)))
    result = {}
    for name, group in sorted(groups.items()):
        if name in main or group & main - {name}:
            continue
        others = ", ".join(sorted(main))
        result[name] = (f"cannot reach the other nodes through the broker: it sees none of "
                        f"{others} in its site broker while the cloud hears them (another Redis, "
                        "or a broker partition: check DMG_REDIS_URL on this node)")
    return result


def with_inactive(status: NodeStatus, reasons: Iterable[str]) -> NodeStatus:
    """``status`` made Inactive for ``reasons`` when it is better than Inactive (Online,
    Limited); an Inactive one gains the reasons; a worse one (Offline, Upgrading) stays."""
    why = tuple(reasons)
    if not why:
        return status
    if status.status in (ONLINE, LIMITED):
        return NodeStatus(INACTIVE, why)
    if status.status == INACTIVE:
        return NodeStatus(INACTIVE, (*status.reasons, *why))
    return status
