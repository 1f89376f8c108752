"""Rebalancing queued shards toward free slots, against real Redis and real Celery messages.

Given a node whose queue holds more shards than it can start and another node
with free slots, when the dispatcher rebalances, then the newest queued shards
move (new attempt on the idle node, message in its queue, the donor's old message
a no-op), and nothing else moves: not a shard the donor started, not more than
the free slots, not to a node that is full, draining or cannot reach the stores,
not under a superseded epoch.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis as redis_lib
from celery import Celery

from dispatcher.placement import Placer
from dispatcher.rebalance import Rebalancer, excess, move_queued
from dmg.placement import NodeLoad
from dmg.site.attempts import STALE, STARTED, start_run
from dmg.site.state import SiteState
from settings.celery import broker_key_prefix
from tests.dispatcher.memcloud import MemoryCloud
from tests.shardkit import planned_spec
from tests.sitekit import beat


def queue_on(state: SiteState, node: str, count: int, *, first: int = 0,
             stores: tuple[str, str] = ("src", "dst")) -> list[str]:
    """``count`` shards placed on ``node`` (attempt 1, queued), as the placer leaves them."""
    ids = []
    for i in range(first, first + count):
        shard_id = f"ar1-{i:05d}"
        state.save_shard(shard_id, planned_spec(shard_id, source=stores[0], sink=stores[1]))
        assert state.new_attempt(shard_id, node) == 1
        ids.append(shard_id)
    return ids


def run_on(state: SiteState, node: str, count: int) -> None:
    state.redis.sadd(state.keys.running(node), *[f"other-{node}-{i}" for i in range(count)])


def messages(client: redis_lib.Redis, node: str) -> list[tuple[str, list[Any], dict[str, Any]]]:
    """(task id, args, kwargs) of each message waiting in ``node.<node>``, oldest first."""
    found = []
    for raw in reversed(client.lrange(f"{broker_key_prefix('gw')}node.{node}", 0, -1)):  # kombu LPUSHes
        message = json.loads(raw)
        args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        found.append((message["headers"]["id"], args, kwargs))
    return found


def rebalancer(state: SiteState, sender: Any, cloud: MemoryCloud | None = None, *,
               epoch: int | None = None) -> Rebalancer:
    placer = Placer(state=state, sender=sender, cloud=cloud, holding=lambda: True, max_queued=1,
                    epoch=lambda: epoch)
    return Rebalancer(placer, interval=0)


def test_queued_shards_beyond_a_nodes_room_move_to_an_idle_node(state: SiteState, sender: Celery,
                                                                redis_client: redis_lib.Redis) -> None:
    beat(state, "a", 1)
    beat(state, "b", 2)
    run_on(state, "a", 1)
    ids = queue_on(state, "a", 5)
    cloud = MemoryCloud()

    moves = rebalancer(state, sender, cloud).rebalance_now()

    # b has two free slots: the two newest of a's queue move there, with a new attempt.
    assert [(m.shard_id, m.donor, m.target, m.attempt) for m in moves] == [
        (ids[4], "a", "b", 2), (ids[3], "a", "b", 2)]
    assert state.queued("a") == set(ids[:3]) and state.queued("b") == {ids[3], ids[4]}
    assert [(task_id, args) for task_id, args, _ in messages(redis_client, "b")] == [
        (f"{ids[4]}:2", [ids[4], 2]), (f"{ids[3]}:2", [ids[3], 2])]
    assert {s: (n, a) for s, (n, a, _) in cloud.placed().items()} == {ids[4]: ("b", 2), ids[3]: ("b", 2)}
    assert "moved from a" in cloud.placed()[ids[4]][2]
    # The message a still holds for attempt 1 is a no-op when delivered; b's starts.
    assert start_run(state, ids[4], 1, "a", runner="r1", alive=lambda _t: False)[0] == STALE
    assert start_run(state, ids[4], 2, "b", runner="r2", alive=lambda _t: False)[0] == STARTED


def test_moves_carry_the_dispatchers_epoch(state: SiteState, sender: Celery,
                                           redis_client: redis_lib.Redis) -> None:
    state.redis.set(state.keys.epoch, 7)
    beat(state, "a", 1)
    beat(state, "b", 1)
    run_on(state, "a", 1)
    [shard] = queue_on(state, "a", 1)

    [move] = rebalancer(state, sender, epoch=7).rebalance_now()

    assert messages(redis_client, "b") == [(f"{shard}:2", [shard, 2], {"epoch": 7})]
    assert state.shard(shard)["epoch"] == 7 and move.attempt == 2


def test_a_superseded_dispatcher_moves_nothing(state: SiteState, sender: Celery,
                                               redis_client: redis_lib.Redis) -> None:
    state.redis.set(state.keys.epoch, 8)  # a newer dispatcher took the lease
    beat(state, "a", 1)
    beat(state, "b", 1)
    run_on(state, "a", 1)
    [shard] = queue_on(state, "a", 1)

    assert rebalancer(state, sender, epoch=7).rebalance_now() == []
    assert state.shard(shard)["attempt"] == 1 and state.queued("a") == {shard}
    assert messages(redis_client, "b") == []


def test_shards_a_node_can_start_itself_stay(state: SiteState, sender: Celery) -> None:
    beat(state, "a", 3)
    beat(state, "b", 4)
    run_on(state, "a", 1)
    ids = queue_on(state, "a", 2)  # room for both on a: no excess

    assert rebalancer(state, sender).rebalance_now() == []
    assert state.queued("a") == set(ids)


def test_nothing_moves_to_a_full_draining_or_blind_node(state: SiteState, sender: Celery) -> None:
    beat(state, "a", 1)
    run_on(state, "a", 1)
    ids = queue_on(state, "a", 3)
    beat(state, "full", 1)
    run_on(state, "full", 1)
    beat(state, "draining", 4, draining=True)
    beat(state, "drained", 4)
    state.set_drain("drained")
    beat(state, "blind", 4, stores_unreachable=["dst"])
    beat(state, "nolimit", 0)

    assert rebalancer(state, sender).rebalance_now() == []
    assert state.queued("a") == set(ids)


def test_a_shard_the_donor_started_meanwhile_stays(state: SiteState) -> None:
    beat(state, "a", 1)
    [shard] = queue_on(state, "a", 1)
    assert start_run(state, shard, 1, "a", runner="w", alive=lambda _t: False)[0] == STARTED

    assert move_queued(state, shard, donor="a", target="b", attempt=1) == 0
    assert state.shard(shard)["attempt"] == 1 and state.running("a") == {shard}
    assert state.queued("b") == set()


def test_a_move_with_a_stale_view_of_the_attempt_does_nothing(state: SiteState) -> None:
    [shard] = queue_on(state, "a", 1)
    assert state.new_attempt(shard, "a") == 2  # re-issued meanwhile

    assert move_queued(state, shard, donor="a", target="b", attempt=1) == 0
    assert state.shard(shard)["node"] == "a" and state.queued("a") == {shard}


def test_a_failed_send_hands_the_shard_back_to_pending(state: SiteState) -> None:
    class BrokenSender:
        def send_task(self, *_args: Any, **_kwargs: Any) -> None:
            raise ConnectionError("broker gone")

    beat(state, "a", 1)
    beat(state, "b", 1)
    run_on(state, "a", 1)
    [shard] = queue_on(state, "a", 1)

    with pytest.raises(ConnectionError):
        rebalancer(state, BrokenSender()).rebalance_now()

    assert state.pending() == [shard]  # placed again by the next round, wherever there is room
    assert state.queued("a") == set() and state.queued("b") == set()
    assert state.shard(shard)["attempt"] == 3  # 2 (the move) fenced off by 3 (the hand-back)


def test_rounds_are_spaced_by_the_interval(state: SiteState, sender: Celery) -> None:
    now = [100.0]
    placer = Placer(state=state, sender=sender, cloud=None, holding=lambda: True, max_queued=1)
    spaced = Rebalancer(placer, interval=1.0, clock=lambda: now[0])
    beat(state, "a", 1)
    run_on(state, "a", 1)
    queue_on(state, "a", 3)
    assert spaced.rebalance() == []  # nowhere to go yet: the round ran and found nothing
    beat(state, "b", 2)

    assert spaced.rebalance() == []  # too soon
    now[0] += 1.0
    assert len(spaced.rebalance()) == 2


def test_excess_counts_what_waits_behind_running_shards() -> None:
    assert excess(NodeLoad("a", limit=2, running=2, queued=3)) == 3
    assert excess(NodeLoad("a", limit=4, running=1, queued=3)) == 0
    assert excess(NodeLoad("a", limit=1, running=3, queued=1)) == 1  # shrunk below its running
