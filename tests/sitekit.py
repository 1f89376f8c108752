"""Helpers for tests that drive the site state (Redis) directly."""

from __future__ import annotations

from typing import Any

from dmg.site.state import SiteState


def beat(state: SiteState, node: str, limit: int, **extra: Any) -> None:
    """A live heartbeat for ``node`` with ``limit`` slots (and any extra fields)."""
    state.publish_heartbeat(node, {"node": node, "limit": limit, **extra}, ttl=30)
