"""Placement by free slots against real Redis heartbeats, sending real Celery messages."""

from __future__ import annotations

import base64
import json
from typing import Any

import redis as redis_lib
from celery import Celery

from dispatcher.placement import ALL_NODES_BUSY, NO_NODE_ONLINE, Placer, node_loads
from dmg.site.attempts import STARTED, start_run
from dmg.site.state import SiteState
from settings.celery import broker_key_prefix
from tests.dispatcher.memcloud import MemoryCloud
from tests.shardkit import planned_spec
from tests.sitekit import beat


def add_shards(state: SiteState, count: int, *, stores: tuple[str, str] = ("src", "dst")) -> list[str]:
    ids = []
    for i in range(count):
        shard_id = f"ar1-{i:05d}"
        state.save_shard(shard_id, planned_spec(shard_id, source=stores[0], sink=stores[1]))
        ids.append(shard_id)
    state.push_pending(*ids)
    return ids


def messages(client: redis_lib.Redis, node: str) -> list[tuple[str, str, list[Any]]]:
    """(task name, task id, args) of each message waiting in ``node.<node>``, oldest first."""
    found = []
    for raw in reversed(client.lrange(f"{broker_key_prefix('gw')}node.{node}", 0, -1)):  # kombu LPUSHes
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        found.append((message["headers"]["task"], message["headers"]["id"], args))
    return found


def placer(state: SiteState, sender: Celery, cloud: MemoryCloud | None = None, *,
           holding: Any = lambda: True, max_queued: int = 0) -> Placer:
    return Placer(state=state, sender=sender, cloud=cloud, holding=holding, max_queued=max_queued)


def test_shards_go_to_the_nodes_with_the_most_free_slots(state: SiteState, sender: Celery,
                                                         redis_client: redis_lib.Redis) -> None:
    beat(state, "a", 4)
    beat(state, "b", 2)
    beat(state, "c", 1)
    ids = add_shards(state, 8)
    cloud = MemoryCloud()

    placed = placer(state, sender, cloud).place_pending()

    by_node: dict[str, int] = {}
    for p in placed:
        by_node[p.node] = by_node.get(p.node, 0) + 1
    assert by_node == {"a": 4, "b": 2, "c": 1}
    assert state.pending() == [ids[7]]  # no room left: it waits
    first = placed[0]
    assert (first.shard_id, first.node, first.attempt) == (ids[0], "a", 1)
    assert messages(redis_client, "a")[0] == ("dmg.copy_shard", f"{ids[0]}:1", [ids[0], 1])
    assert [len(messages(redis_client, n)) for n in "abc"] == [4, 2, 1]
    assert state.queued("a") == {p.shard_id for p in placed if p.node == "a"}
    assert cloud.placed()[ids[0]] == ("a", 1, "")
    assert len(cloud.placed()) == 7


def test_running_shards_take_slots(state: SiteState, sender: Celery) -> None:
    beat(state, "a", 4)
    beat(state, "b", 2)
    for i in range(3):
        state.redis.sadd(state.keys.running("a"), f"old-{i}")
    ids = add_shards(state, 4)

    placed = placer(state, sender).place_pending()

    # free slots a=1, b=2 -> b; then 1 and 1, a has fewer queued -> a; then a=0, b=1 -> b.
    assert [p.node for p in placed] == ["b", "a", "b"]
    assert state.pending() == [ids[3]]


def test_a_waiting_shard_is_placed_when_a_slot_frees_with_its_wait_reason(state: SiteState,
                                                                          sender: Celery) -> None:
    beat(state, "a", 1)
    ids = add_shards(state, 2)
    cloud = MemoryCloud()
    p = placer(state, sender, cloud)
    assert [x.shard_id for x in p.place_pending()] == [ids[0]]
    assert p.place_pending() == [] and p.wait_reason(ids[1]) == ALL_NODES_BUSY

    assert start_run(state, ids[0], 1, "a", runner="w", alive=lambda _t: False)[0] == STARTED
    state.mark_finished(ids[0], 1, "a", ok=True)
    placed = p.place_pending()

    assert [(x.shard_id, x.node, x.wait_reason) for x in placed] == [(ids[1], "a", ALL_NODES_BUSY)]
    assert cloud.placed()[ids[1]] == ("a", 1, ALL_NODES_BUSY)


def test_nodes_without_a_live_heartbeat_get_nothing(state: SiteState, sender: Celery) -> None:
    ids = add_shards(state, 1)
    state.publish_worker_load("a", running=0, limit=4, pids=[1], ttl=30)  # a worker, but no heartbeat
    p = placer(state, sender)

    assert p.place_pending() == []
    assert state.pending() == ids and p.wait_reason(ids[0]) == NO_NODE_ONLINE


def test_the_worker_load_supplies_a_limit_missing_from_the_heartbeat(state: SiteState) -> None:
    beat(state, "a", 0)
    state.publish_worker_load("a", running=0, limit=3, pids=[1, 2, 3], ttl=30)
    assert [(n.name, n.limit) for n in node_loads(state)] == [("a", 3)]


def test_draining_nodes_and_nodes_that_cannot_reach_a_store_are_skipped(state: SiteState,
                                                                        sender: Celery) -> None:
    beat(state, "a", 8, draining=True)
    beat(state, "b", 8, stores_unreachable=["dst"])
    beat(state, "c", 1)
    add_shards(state, 2)
    p = placer(state, sender)

    assert [x.node for x in p.place_pending()] == ["c"]
    assert p.wait_reason("ar1-00001") == "the nodes with room cannot reach store(s) dst"


def test_max_queued_lets_a_full_node_hold_a_short_queue(state: SiteState, sender: Celery) -> None:
    beat(state, "a", 1)
    add_shards(state, 4)
    assert len(placer(state, sender, max_queued=1).place_pending()) == 2


def test_a_dispatcher_that_lost_its_lease_places_nothing_more(state: SiteState, sender: Celery,
                                                              redis_client: redis_lib.Redis) -> None:
    beat(state, "a", 8)
    ids = add_shards(state, 3)
    answers = iter([True, True, False])  # the lease lapses after the first placement

    placed = placer(state, sender, holding=lambda: next(answers, False)).place_pending()

    assert [p.shard_id for p in placed] == [ids[0]]
    assert state.pending() == ids[1:]
    assert len(messages(redis_client, "a")) == 1


def test_a_shard_whose_spec_cannot_be_read_is_placed_for_its_runner_to_fail(
        state: SiteState, sender: Celery, redis_client: redis_lib.Redis) -> None:
    beat(state, "a", 2)
    state.save_shard("ar1-00000", {"shard_id": "ar1-00000", "sink": {"store": "dst"}})
    state.push_pending("ar1-00000")

    placed = placer(state, sender).place_pending()

    assert [(p.shard_id, p.node, p.attempt) for p in placed] == [("ar1-00000", "a", 1)]
    assert state.pending() == []
    assert messages(redis_client, "a") == [("dmg.copy_shard", "ar1-00000:1", ["ar1-00000", 1])]


def test_a_spec_whose_entries_cannot_be_read_is_placed_by_its_stores_for_its_runner_to_fail(
        state: SiteState, sender: Celery, redis_client: redis_lib.Redis) -> None:
    # Placement reads a spec's stores alone (ShardStores): bad entries do not lift the store checks.
    beat(state, "a", 8, stores_unreachable=["dst"])
    beat(state, "b", 1)
    spec = {**planned_spec("ar1-00000"), "entries": [{"path": "a", "size": "big", "mtime": 0}]}
    state.save_shard("ar1-00000", spec)
    state.push_pending("ar1-00000")

    placed = placer(state, sender).place_pending()

    assert [(p.shard_id, p.node) for p in placed] == [("ar1-00000", "b")]
    assert messages(redis_client, "b") == [("dmg.copy_shard", "ar1-00000:1", ["ar1-00000", 1])]


def test_each_shard_of_a_window_is_read_when_its_turn_comes(state: SiteState, sender: Celery) -> None:
    # The first shard of a window is placed; one later in it that lost its spec meanwhile
    # is dropped, and the others are placed in order.
    beat(state, "a", 8)
    ids = add_shards(state, 3)
    state.redis.hdel(state.keys.shard(ids[1]), "spec")

    placed = placer(state, sender).place_pending()

    assert [p.shard_id for p in placed] == [ids[0], ids[2]]
    assert state.pending() == []


def test_a_node_on_another_version_gets_work_only_when_the_majority_is_full(
        state: SiteState, sender: Celery) -> None:
    beat(state, "old", 4, version="0.1.0")  # the most free slots, but the minority version
    beat(state, "a", 2, version="0.2.0")
    beat(state, "b", 2, version="0.2.0")
    add_shards(state, 6)

    placed = placer(state, sender).place_pending()

    assert [p.node for p in placed[:4]].count("old") == 0  # a and b first, while they have room
    by_node: dict[str, int] = {}
    for p in placed:
        by_node[p.node] = by_node.get(p.node, 0) + 1
    assert by_node == {"a": 2, "b": 2, "old": 2}  # then the gateway keeps moving data on "old"
