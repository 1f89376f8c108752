"""Attempt numbers have no gap, and the next placement says why the last attempt ended.

Before issue 8 item 7, a shard taken off a dead node was bumped twice (once by the
requeue that fenced the old attempt, once by the placement that sent the new one):
``dmg runs show`` went from attempt 1 to attempt 3.
"""

from __future__ import annotations

import redis as redis_lib
from celery import Celery

from dispatcher.recovery import OrphanWatch, requeue_offline
from dmg.attempt_ends import NODE_OFFLINE, NODE_RESTARTED, WORKER_DIED
from dmg.site.attempts import STALE, requeue, start_run
from dmg.site.state import SiteState
from tests.dispatcher.memcloud import MemoryCloud
from tests.dispatcher.test_placement import add_shards, placer
from tests.sitekit import beat


def placed_reports(cloud: MemoryCloud, shard_id: str) -> list[dict[str, object]]:
    return [r for s, r in cloud.reports if s == shard_id and r["status"] == "placed"]


def test_a_shard_off_an_offline_node_gets_the_next_number_and_the_reason(
        state: SiteState, sender: Celery, redis_client: redis_lib.Redis) -> None:
    beat(state, "a", 1)
    [shard] = add_shards(state, 1)
    cloud = MemoryCloud()
    [first] = placer(state, sender, cloud).place_pending()
    assert (first.node, first.attempt) == ("a", 1)

    redis_client.delete(state.keys.heartbeat("a"))  # a's heartbeat expired: it is offline
    beat(state, "b", 1)
    assert requeue_offline(state) == [shard]
    [second] = placer(state, sender, cloud).place_pending()

    assert (second.node, second.attempt) == ("b", 2)
    assert state.shard(shard)["attempt"] == 2
    old, new = placed_reports(cloud, shard)
    assert "previous_ended" not in old
    assert new["attempt"] == 2 and new["node"] == "b" and new["previous_ended"] == NODE_OFFLINE
    assert isinstance(new["previous_ended_at"], float) and isinstance(new["placed_at"], float)
    # The old attempt is fenced off: its delivery on a does nothing.
    assert start_run(state, shard, 1, "a", runner="1@1.0", alive=lambda _t: False)[0] == STALE


def test_numbers_stay_contiguous_over_several_hand_backs(state: SiteState, sender: Celery) -> None:
    beat(state, "a", 1)
    [shard] = add_shards(state, 1)
    cloud = MemoryCloud()
    place = placer(state, sender, cloud)
    attempts = [place.place_pending()[0].attempt]
    for reason in (NODE_RESTARTED, WORKER_DIED, NODE_RESTARTED):
        assert requeue(state, shard, "a", reason=reason) == attempts[-1] + 1
        attempts.append(place.place_pending()[0].attempt)

    assert attempts == [1, 2, 3, 4]
    ends = [r.get("previous_ended") for r in placed_reports(cloud, shard)]
    assert ends == [None, NODE_RESTARTED, WORKER_DIED, NODE_RESTARTED]


def test_the_reserved_number_is_used_once(state: SiteState, sender: Celery) -> None:
    """After placement sent the reserved number, the next fence bumps again."""
    beat(state, "a", 1)
    [shard] = add_shards(state, 1)
    place = placer(state, sender)
    place.place_pending()
    requeue(state, shard, "a")
    assert place.place_pending()[0].attempt == 2
    assert state.new_attempt(shard, "a") == 3  # a re-issue: a new number, the old one fenced
    assert requeue(state, shard, "a") == 4
    assert requeue(state, shard, "a") == 0  # not on a any more: nothing to do


def test_an_orphan_is_reported_as_worker_died(state: SiteState, sender: Celery) -> None:
    beat(state, "a", 2)
    [shard] = add_shards(state, 1)
    place = placer(state, sender, MemoryCloud())
    place.place_pending()
    assert start_run(state, shard, 1, "a", runner="999999@1.000", alive=lambda _t: False)[0] == "started"
    state.redis.set(state.keys.load("a"), '{"running": 0, "limit": 2, "pids": [1]}')
    now = [0.0]
    watch = OrphanWatch(grace=1.0, clock=lambda: now[0])
    assert watch.check(state) == []
    now[0] = 2.0
    assert watch.check(state) == [shard]
    assert state.shard(shard)["attempt"] == 2
    raw = state.redis.hget(state.keys.shard(shard), "ended_reason")
    assert raw in (WORKER_DIED, WORKER_DIED.encode())
