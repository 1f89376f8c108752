"""Shards a dispatcher planned itself are placed without a read back (dispatcher.fresh),
and what it knows of them is never trusted beyond the placement script's own check
(real Redis; round trips counted by the client's connections)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from celery import Celery

from dispatcher.fresh import FreshShards
from dispatcher.messages import ShardMessages
from dispatcher.placement import Placer
from dispatcher.planner import plan_activity_run
from dmg.connectors import StoreSpec
from dmg.shards import ShardStores
from dmg.site import scripts
from dmg.site.attempts import requeue
from dmg.site.boundary import SiteRedis
from dmg.site.state import SiteState
from settings import Settings
from settings.celery import broker_key_prefix
from tests.dispatcher.memcloud import MemoryCloud
from tests.dispatcher.test_plan_round_trips import CountingConnection
from tests.dispatcher.test_planner import activity_run
from tests.sitekit import beat
from tests.workers.support import write_files
from workers.names import copy_task_id, node_queue

SETTINGS = Settings(shard_max_files=1, shard_max_bytes=1_000_000)


@pytest.fixture
def counted(redis_url: str) -> Iterator[SiteState]:
    """The site state of gateway "gw" on a client whose round trips are counted."""
    client = SiteRedis.from_url(redis_url, connection_class=CountingConnection)
    client.script_load(scripts.RECORD_PLAN)
    client.script_load(scripts.PLACE_SHARD)
    yield SiteState(client, "gw")
    client.close()


def one_step_placer(state: SiteState, sender: Celery, fresh: FreshShards) -> Placer:
    messages = ShardMessages.of(sender)
    assert messages is not None
    return Placer(state=state, sender=sender, cloud=None, holding=lambda: True, max_queued=0,
                  messages=messages, fresh=fresh)


def plan(tmp_path: Path, state: SiteState, fresh: FreshShards | None, *, files: int,
         run_id: str) -> list[str]:
    write_files(tmp_path / "src" / run_id, {f"f{i}": 10 for i in range(files)})
    result = plan_activity_run(activity_run(tmp_path, run_id, run_id), state=state, cloud=MemoryCloud(),
                               epoch=1, settings=SETTINGS, fresh=fresh)
    assert result.queued and not result.failed
    return result.queued


def trips_of_round(placer: Placer) -> tuple[int, list[tuple[str, int]]]:
    before = CountingConnection.sent
    placed = placer.place_pending(woken=True)
    return CountingConnection.sent - before, [(p.shard_id, p.attempt) for p in placed]


def task_ids(client: redis_lib.Redis, node: str) -> list[str]:
    raws = reversed(client.lrange(broker_key_prefix("gw") + node_queue(node), 0, -1))
    return [json.loads(raw)["headers"]["id"] for raw in raws]


def test_a_fresh_plan_is_placed_without_reading_its_shards_back(tmp_path: Path, counted: SiteState,
                                                                sender: Celery) -> None:
    # Given two planned shards, one planned by this dispatcher (known fresh), one not
    beat(counted, "a", 10)  # room left after each round: it ends with a read of the next window
    fresh = FreshShards()
    [known] = plan(tmp_path, counted, fresh, files=1, run_id="ar1")
    [unknown] = plan(tmp_path, counted, None, files=1, run_id="ar2")
    assert fresh.known([known, unknown]).keys() == {known}
    placer = one_step_placer(counted, sender, fresh)
    placer.place_pending()  # learns the nodes' names (their loads ride with them from now on)
    assert counted.pending() == []

    # When a round places a shard of each kind
    [known2] = plan(tmp_path, counted, fresh, files=1, run_id="ar3")
    known_trips, known_placed = trips_of_round(placer)
    [unknown2] = plan(tmp_path, counted, None, files=1, run_id="ar4")
    unknown_trips, unknown_placed = trips_of_round(placer)

    # Then the fresh one cost one round trip less than the other
    # (the loads with the pending window, the placement script, the next window's read; the
    # other one read its hash before its script), both went out as attempt 1, and a placed
    # shard is forgotten
    assert (known_trips, known_placed) == (3, [(known2, 1)])
    assert (unknown_trips, unknown_placed) == (4, [(unknown2, 1)])
    assert len(fresh) == 0
    assert task_ids(counted.redis, "a") == [copy_task_id(s, 1) for s in (known, unknown, known2, unknown2)]


def test_what_is_known_of_a_shard_that_changed_is_not_trusted(tmp_path: Path, state: SiteState,
                                                              sender: Celery) -> None:
    # Given a shard planned and placed here, then requeued (attempt 2, not sent yet), and a
    # stale knowledge of it as fresh (attempt 0, no node) with its pending entry
    beat(state, "a", 4)
    fresh = FreshShards()
    [shard_id] = plan(tmp_path, state, fresh, files=1, run_id="ar1")
    placer = one_step_placer(state, sender, fresh)
    assert [(p.shard_id, p.attempt) for p in placer.place_pending()] == [(shard_id, 1)]
    assert requeue(state, shard_id, "a") == 2
    fresh.add([shard_id], fresh_stores(tmp_path, state))

    # When placement rounds run
    first = placer.place_pending()
    second = placer.place_pending()

    # Then the stale knowledge placed nothing (the script refused it) and was forgotten; the
    # next round read the shard and sent the attempt its requeue fenced with, once
    assert first == [] and len(fresh) == 0
    assert [(p.shard_id, p.attempt) for p in second] == [(shard_id, 2)]
    assert task_ids(state.redis, "a") == [copy_task_id(shard_id, 1), copy_task_id(shard_id, 2)]
    assert state.pending() == []


def test_a_placed_shard_known_as_fresh_again_is_not_placed_twice(tmp_path: Path, state: SiteState,
                                                                 sender: Celery) -> None:
    # Given a shard placed, a duplicate pending entry of it, and a stale knowledge of it as fresh
    beat(state, "a", 4)
    fresh = FreshShards()
    [shard_id] = plan(tmp_path, state, fresh, files=1, run_id="ar1")
    placer = one_step_placer(state, sender, fresh)
    placer.place_pending()
    state.push_pending(shard_id)
    fresh.add([shard_id], fresh_stores(tmp_path, state))

    # When placement rounds run
    placer.place_pending()
    placer.place_pending()

    # Then it was sent once: the duplicate entry was dropped once read from Redis
    assert task_ids(state.redis, "a") == [copy_task_id(shard_id, 1)]
    assert state.pending() == [] and len(fresh) == 0


def test_the_oldest_are_dropped_past_the_limit(tmp_path: Path, state: SiteState) -> None:
    fresh = FreshShards(limit=2)
    fresh.add(["s1", "s2", "s3"], fresh_stores(tmp_path, state))
    assert fresh.known(["s1", "s2", "s3"]).keys() == {"s2", "s3"}  # the oldest went first
    fresh.forget("s2")
    assert fresh.known(["s2", "s3"]).keys() == {"s3"}


def test_a_replayed_plan_is_not_known_fresh(tmp_path: Path, state: SiteState) -> None:
    # Given a plan recorded before (its shards may have run since)
    plan(tmp_path, state, None, files=2, run_id="ar1")
    fresh = FreshShards()

    # When it is planned again (a replay) with the fresh record
    write_files(tmp_path / "src" / "ar1", {"f0": 10, "f1": 10})
    plan_activity_run(activity_run(tmp_path, "ar1", "ar1"), state=state, cloud=MemoryCloud(), epoch=1,
                      settings=SETTINGS, fresh=fresh)

    # Then none of its shards is taken as fresh
    assert len(fresh) == 0


def fresh_stores(tmp_path: Path, state: SiteState) -> ShardStores:
    run = activity_run(tmp_path, "ar1", "ar1")
    return ShardStores(StoreSpec.from_json(run["source"]["store"]), StoreSpec.from_json(run["sink"]["store"]))
