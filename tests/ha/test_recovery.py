"""The dispatcher's recovery moves on a real Redis, with real Celery messages.

Given shards queued and running on nodes, when a node's heartbeat expires, a
running shard's process vanishes from a live node, a queued shard's message is lost
on a live node, or a new dispatcher takes over, then each affected shard gets a new
attempt (the old one fenced) and is placed again, and nothing else moves.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis as redis_lib
from celery import Celery

from dispatcher.placement import Placer
from dispatcher.recovery import OrphanWatch, StrandedWatch, requeue_offline, take_over
from dmg.site.attempts import runner_token, start_run
from dmg.site.state import SiteState
from settings.celery import broker_key_prefix
from tests.workers.support import wait_for

pytestmark = pytest.mark.integration


def beat(state: SiteState, node: str, *, ttl: float = 30) -> None:
    state.publish_heartbeat(node, {"node": node, "limit": 2}, ttl=ttl)


def add(state: SiteState, *ids: str) -> None:
    for shard_id in ids:
        state.save_shard(shard_id, {"shard_id": shard_id})


def run_on(state: SiteState, shard_id: str, node: str, *, pid: int) -> int:
    attempt = state.new_attempt(shard_id, node)
    start_run(state, shard_id, attempt, node, runner=runner_token(pid, 1.0), alive=lambda _t: False)
    return attempt


def messages(client: redis_lib.Redis, node: str) -> list[tuple[list[Any], dict[str, Any]]]:
    found = []
    for raw in reversed(client.lrange(f"{broker_key_prefix('gw')}node.{node}", 0, -1)):
        args, kwargs, _embed = json.loads(base64.b64decode(json.loads(raw)["body"]))
        found.append((args, kwargs))
    return found


def test_running_and_queued_shards_of_an_offline_node_get_new_attempts(state: SiteState) -> None:
    beat(state, "a")
    beat(state, "b", ttl=0.05)
    add(state, "s1", "s2", "s3")
    running = run_on(state, "s1", "b", pid=4242)
    queued = state.new_attempt("s2", "b")
    elsewhere = run_on(state, "s3", "a", pid=4343)
    wait_for(lambda: "b" not in state.heartbeats(), what="b's heartbeat to expire")

    moved = requeue_offline(state)

    assert sorted(moved) == ["s1", "s2"] and sorted(state.pending()) == ["s1", "s2"]
    assert state.running("b") == set() and state.queued("b") == set()
    assert not state.is_current("s1", running) and not state.is_current("s2", queued)
    assert state.is_current("s3", elsewhere) and state.running("a") == {"s3"}
    assert requeue_offline(state) == []


def test_a_running_shard_whose_process_left_a_live_node_is_requeued_after_the_grace(state: SiteState) -> None:
    beat(state, "a")
    add(state, "lost", "fine")
    run_on(state, "lost", "a", pid=5001)
    run_on(state, "fine", "a", pid=5002)
    state.publish_worker_load("a", running=1, limit=2, pids=[5002, 5003], ttl=30)
    now = [0.0]
    watch = OrphanWatch(grace=3.0, clock=lambda: now[0])

    assert watch.check(state) == []  # suspected, not yet moved: a requeued delivery may be on its way
    now[0] = 2.9
    assert watch.check(state) == []
    now[0] = 3.1
    assert watch.check(state) == ["lost"]
    assert state.pending() == ["lost"] and state.running("a") == {"fine"}


def test_a_node_without_a_published_pool_is_not_judged(state: SiteState) -> None:
    beat(state, "a")
    add(state, "s1")
    run_on(state, "s1", "a", pid=6001)
    watch = OrphanWatch(grace=0.0)

    assert watch.check(state) == [] and state.running("a") == {"s1"}


def test_a_new_dispatcher_reissues_queued_shards_and_replays_unfinished_plans(
        state: SiteState, sender: Celery, redis_client: redis_lib.Redis) -> None:
    beat(state, "a")
    add(state, "queued", "running")
    state.redis.set(state.keys.epoch, 1)
    old = state.new_attempt("queued", "a", epoch=1)  # its message may never have been sent
    run_on(state, "running", "a", pid=7001)
    state.begin_planning("planned-run")
    state.redis.set(state.keys.plan("planned-run"), "[]")
    state.begin_planning("never-planned")
    state.redis.set(state.keys.epoch, 2)  # the new dispatcher's lease
    placer = Placer(state=state, sender=sender, cloud=None, holding=lambda: True, max_queued=0,
                    epoch=lambda: 2)

    reissued, replay = take_over(state, placer, epoch=2)

    assert reissued == ["queued"] and replay == {"planned-run"}
    assert not state.is_current("queued", old) and state.is_current("queued", old + 1)
    assert messages(redis_client, "a") == [(["queued", old + 1], {"epoch": 2})]
    assert state.planning() == {"planned-run"}  # the replay ends it
    assert take_over(state, placer, epoch=1) == ([], set())  # a superseded epoch re-issues nothing


def placer_of(state: SiteState, sender: Celery, epoch: int) -> Placer:
    state.redis.set(state.keys.epoch, epoch)
    return Placer(state=state, sender=sender, cloud=None, holding=lambda: True, max_queued=0,
                  epoch=lambda: epoch)


def test_a_queued_shard_whose_message_is_gone_from_a_live_idle_node_is_sent_again_after_the_grace(
        state: SiteState, sender: Celery, redis_client: redis_lib.Redis) -> None:
    """Given node a alive with a free slot and nothing in its broker queue, and a shard queued
    on it (its message taken by a worker whose broker connection then broke), when it stays
    so for the grace, then it gets a new attempt on a and its message is in a's queue."""
    beat(state, "a")
    add(state, "lost")
    placer = placer_of(state, sender, 1)
    old = state.new_attempt("lost", "a", epoch=1)
    state.publish_worker_load("a", running=0, limit=2, pids=[7101, 7102], ttl=30)
    now = [0.0]
    watch = StrandedWatch(grace=3.0, clock=lambda: now[0])

    assert watch.check(state, placer, epoch=1) == []  # a message may be on its way to the pool
    now[0] = 2.9
    assert watch.check(state, placer, epoch=1) == []
    now[0] = 3.1
    assert watch.check(state, placer, epoch=1) == ["lost"]

    assert not state.is_current("lost", old) and state.is_current("lost", old + 1)
    assert state.queued("a") == {"lost"}
    assert messages(redis_client, "a") == [(["lost", old + 1], {"epoch": 1})]
    now[0] = 10.0
    assert watch.check(state, placer, epoch=1) == []  # its message waits in the queue now


def test_a_queued_shard_is_left_alone_while_its_node_is_busy_has_messages_waiting_or_drains(
        state: SiteState, sender: Celery, redis_client: redis_lib.Redis) -> None:
    beat(state, "full")
    beat(state, "backlog")
    beat(state, "draining")
    beat(state, "silent")  # no load published: its worker cannot be judged
    add(state, "s-full", "s-backlog", "s-draining", "s-silent")
    placer = placer_of(state, sender, 1)
    for shard_id, node in (("s-full", "full"), ("s-backlog", "backlog"), ("s-draining", "draining"),
                           ("s-silent", "silent")):
        state.new_attempt(shard_id, node, epoch=1)
    state.publish_worker_load("full", running=2, limit=2, pids=[1, 2], ttl=30)
    state.publish_worker_load("backlog", running=0, limit=2, pids=[3, 4], ttl=30)
    state.publish_worker_load("draining", running=0, limit=2, pids=[5, 6], ttl=30)
    state.redis.hset(state.keys.drain, "draining", "drain")
    placer.send("s-backlog", "backlog", 1, epoch=1)  # a message still waits in backlog's queue
    now = [0.0]
    watch = StrandedWatch(grace=1.0, clock=lambda: now[0])

    assert watch.check(state, placer, epoch=1) == []
    now[0] = 5.0
    assert watch.check(state, placer, epoch=1) == []
    assert all(state.is_current(s, 1) for s in ("s-full", "s-backlog", "s-draining", "s-silent"))
