"""What the portal asks of a node reaches the site through the node (its heartbeat answer).

Given the site state of gateway "gw" on a real Redis, when the node's heartbeat answer
asks it to drain, then its drain flag is set (as ``dmg node drain`` sets it); undrain
clears it; a node flagged ``removed`` stays removed; an answer with nothing, or with
garbage, changes nothing and never raises (a heartbeat must go on).
"""

from __future__ import annotations

from dmg.site.state import DRAIN_REMOVED, SiteState
from settings import Settings
from workers.agent.requests import PortalRequests


def requests_for(state: SiteState, redis_url: str) -> PortalRequests:
    return PortalRequests(Settings(redis_url=redis_url, gateway="gw"), state, "n1", "gw")


def test_drain_and_undrain_set_and_clear_the_sites_flag(state: SiteState, redis_url: str) -> None:
    apply = requests_for(state, redis_url)
    apply({"status": "Online", "requests": {"drain": True}})
    assert state.drained() == {"n1": "drain"}
    apply({"requests": {"drain": True}})  # asked again until a beat shows it: idempotent
    assert state.drained() == {"n1": "drain"}
    apply({"requests": {"drain": False}})
    assert state.drained() == {}


def test_a_removed_node_is_never_undrained_from_the_portal(state: SiteState, redis_url: str) -> None:
    state.set_drain("n1", DRAIN_REMOVED)
    requests_for(state, redis_url)({"requests": {"drain": False}})
    assert state.drained() == {"n1": DRAIN_REMOVED}


def test_nothing_or_garbage_asked_changes_nothing(state: SiteState, redis_url: str) -> None:
    apply = requests_for(state, redis_url)
    for answer in ({}, {"requests": {}}, {"requests": None}, {"requests": "drain"},
                   {"requests": {"drain": "yes", "limit": "8"}}, {"requests": {"limit": True}},
                   {"requests": {"limit": -3}}):
        apply(answer)  # type: ignore[arg-type]
    assert state.drained() == {}
    apply.close()
