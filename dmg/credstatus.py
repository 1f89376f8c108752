"""A node's credential status, in words, from the versions it holds and the gateway's: a leaf
shared by the cloud (which derives the status) and the nodes (which sync what is stale).

``credential_state(held, current)`` -> ``(status, problem)``:

- ``("none", None)``: the gateway has no synced credential;
- ``("in sync (2)", None)``: the node holds the current version of each;
- ``("out of sync: has v3 of 'lake', gateway has v4", same)``, or ``lacks 'lake'``: the
  problem makes the node Limited (:func:`dmg.status.node_status`); with several stores
  the first (by name) is named and ``(+N more)`` follows.

Versions the node holds for credentials the gateway no longer has do not matter.
"""

from __future__ import annotations

from collections.abc import Mapping

NONE = "none"


def stale_stores(held: Mapping[str, int], current: Mapping[str, int]) -> list[str]:
    """The credentials (by store) whose current version the node does not hold."""
    return sorted(store for store, version in current.items() if held.get(store) != version)


def credential_state(held: Mapping[str, int], current: Mapping[str, int]) -> tuple[str, str | None]:
    if not current:
        return NONE, None
    stale = stale_stores(held, current)
    if not stale:
        return f"in sync ({len(current)})", None
    store = stale[0]
    have = held.get(store)
    what = f"has v{have} of {store!r}" if have is not None else f"lacks {store!r}"
    more = f" (+{len(stale) - 1} more)" if len(stale) > 1 else ""
    text = f"out of sync: {what}, gateway has v{current[store]}{more}"
    return text, text
