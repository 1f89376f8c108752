"""Placement rules, one test each, against real Redis and real Celery messages.

A node gets a shard only while it has room under its *current* limit (the worker's
load after a ``dmg scale`` wins over the heartbeat; no worker, no work); only while
it is online (live heartbeat) and not draining (its heartbeat's flag or the site's
drain hash); only if it can reach both stores of the shard. A shard that no node
with room can reach waits with a reason and does not hold up the shards behind it,
however long the backlog.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from celery import Celery

from dispatcher.placement import (
    ALL_NODES_BUSY,
    ALL_NODES_DRAINED,
    NO_NODE_ONLINE,
    NO_POOL_RUNNING,
    WINDOW,
    Placer,
)
from dmg.site.state import SiteState
from tests.shardkit import planned_spec
from tests.sitekit import beat


def add_shards(state: SiteState, count: int, *, first: int = 0,
               stores: tuple[str, str] = ("src", "dst")) -> list[str]:
    ids = []
    for i in range(first, first + count):
        shard_id = f"ar1-{i:05d}"
        state.save_shard(shard_id, planned_spec(shard_id, source=stores[0], sink=stores[1]))
        ids.append(shard_id)
    state.push_pending(*ids)
    return ids


def placer(state: SiteState, sender: Celery, *, max_queued: int = 0) -> Placer:
    return Placer(state=state, sender=sender, cloud=None, holding=lambda: True, max_queued=max_queued)


def nodes_of(placed: list[Any]) -> Counter[str]:
    return Counter(p.node for p in placed)


# -- limit -----------------------------------------------------------------------------
def test_no_node_gets_more_than_its_limit_plus_the_queue_allowance(state: SiteState, sender: Celery) -> None:
    beat(state, "big", 5)
    beat(state, "small", 2)
    add_shards(state, 20)

    assert nodes_of(placer(state, sender, max_queued=1).place_pending()) == {"big": 6, "small": 3}


def test_a_scaled_down_limit_counts_before_the_next_heartbeat(state: SiteState, sender: Celery) -> None:
    beat(state, "a", 4)  # the heartbeat still says 4 ...
    state.publish_worker_load("a", running=0, limit=1, pids=[1], ttl=30)  # ... `dmg scale a 1` said 1
    add_shards(state, 3)

    assert nodes_of(placer(state, sender).place_pending()) == {"a": 1}


def test_a_node_without_a_worker_gets_nothing(state: SiteState, sender: Celery) -> None:
    beat(state, "no-worker", 0)
    beat(state, "b", 1)
    add_shards(state, 3)
    p = placer(state, sender)

    assert nodes_of(p.place_pending()) == {"b": 1}
    assert p.wait_reason("ar1-00001") == ALL_NODES_BUSY


# -- status ----------------------------------------------------------------------------
def test_an_offline_node_gets_nothing_more(state: SiteState, sender: Celery) -> None:
    beat(state, "a", 2)
    beat(state, "b", 2)
    add_shards(state, 2)
    assert nodes_of(placer(state, sender).place_pending()) == {"a": 1, "b": 1}
    state.redis.delete(state.keys.heartbeat("b"))  # b's heartbeat expired: Offline
    add_shards(state, 3, first=2)

    assert nodes_of(placer(state, sender).place_pending()) == {"a": 1}


def test_a_node_drained_through_the_site_state_gets_nothing_at_once(state: SiteState,
                                                                    sender: Celery) -> None:
    beat(state, "a", 4)  # its heartbeat does not say draining yet
    beat(state, "b", 1)
    state.set_drain("a")
    add_shards(state, 3)
    p = placer(state, sender)

    assert nodes_of(p.place_pending()) == {"b": 1}
    state.clear_drain("a")
    assert nodes_of(p.place_pending()) == {"a": 2}


def test_with_every_node_draining_shards_wait_as_if_none_were_online(state: SiteState,
                                                                     sender: Celery) -> None:
    beat(state, "a", 4, draining=True)
    ids = add_shards(state, 2)
    p = placer(state, sender)

    assert p.place_pending() == []
    assert state.pending() == ids and p.wait_reason(ids[0]) == ALL_NODES_DRAINED


def test_nodes_without_a_worker_pool_say_so_not_that_they_are_full(state: SiteState,
                                                                   sender: Celery) -> None:
    # A site coming back: heartbeats, but no worker has published its pool yet.
    beat(state, "a", 0)
    beat(state, "b", 0)
    ids = add_shards(state, 2)
    p = placer(state, sender)

    assert p.place_pending() == [] and p.wait_reason(ids[0]) == NO_POOL_RUNNING


def test_a_site_down_reason_replaces_an_earlier_busy_one(state: SiteState, sender: Celery) -> None:
    beat(state, "a", 1)
    ids = add_shards(state, 4)
    p = placer(state, sender)
    assert p.place_pending() and p.wait_reason(ids[-1]) == ALL_NODES_BUSY
    state.forget_node("a")  # the whole site goes down

    assert p.place_pending() == [] and p.wait_reason(ids[-1]) == NO_NODE_ONLINE


def test_no_node_at_all(state: SiteState, sender: Celery) -> None:
    ids = add_shards(state, 2)
    p = placer(state, sender)

    assert p.place_pending() == [] and p.wait_reason(ids[1]) == NO_NODE_ONLINE


# -- stores ----------------------------------------------------------------------------
def test_a_shard_goes_to_the_node_that_reaches_its_stores_even_with_less_room(state: SiteState,
                                                                              sender: Celery) -> None:
    beat(state, "roomy", 8, stores_unreachable=["lake"])
    beat(state, "tight", 1)
    [shard] = add_shards(state, 1, stores=("share", "lake"))

    [placed] = placer(state, sender).place_pending()

    assert (placed.shard_id, placed.node) == (shard, "tight")


def test_a_store_that_only_the_source_side_lacks_also_counts(state: SiteState, sender: Celery) -> None:
    beat(state, "a", 8, stores_unreachable=["share"])
    ids = add_shards(state, 1, stores=("share", "lake"))
    p = placer(state, sender)

    assert p.place_pending() == []
    assert p.wait_reason(ids[0]) == "the nodes with room cannot reach store(s) share"


def test_an_unreachable_shard_does_not_hold_up_a_long_backlog(state: SiteState, sender: Celery) -> None:
    beat(state, "a", 4, stores_unreachable=["lake"])
    blocked = add_shards(state, WINDOW + 10, stores=("share", "lake"))  # more than one window
    behind = add_shards(state, 3, first=WINDOW + 10)
    p = placer(state, sender)

    placed = p.place_pending()

    assert [x.shard_id for x in placed] == behind
    assert state.pending() == blocked  # in their order, for when a node can reach the lake
    assert p.wait_reason(blocked[-1]) == "the nodes with room cannot reach store(s) lake"


def test_every_shard_of_a_long_backlog_learns_why_it_waits(state: SiteState, sender: Celery) -> None:
    beat(state, "a", 1)
    first = add_shards(state, 2 * WINDOW)
    p = placer(state, sender)
    assert len(p.place_pending()) == 1
    later = add_shards(state, 5, first=2 * WINDOW)  # work arriving while every node is busy

    assert p.place_pending() == []

    assert {p.wait_reason(s) for s in first[1:] + later} == {ALL_NODES_BUSY}
