"""Several small shards in one Celery message when the backlog exceeds the free slots
(dispatcher.packing), against real Redis and the messages a real Celery sender's broker holds."""

from __future__ import annotations

import json
from typing import Any

import redis as redis_lib
from celery import Celery

from dispatcher.messages import ShardMessages
from dispatcher.placement import ALL_NODES_BUSY, Placer, node_loads
from dispatcher.rebalance import Rebalancer
from dispatcher.recovery import StrandedWatch, requeue_offline
from dispatcher.reports import PlacementOutbox
from dmg.connectors import Entry, StoreSpec
from dmg.shards import ShardSpec
from dmg.shards.spec import SMALL_MAX_BYTES, SMALL_MAX_FILES
from dmg.site.attempts import STALE, STARTED, begin_run, reissue
from dmg.site.state import SiteState
from tests.dispatcher.test_placement import messages
from tests.sitekit import beat
from workers.names import COPY_SHARD, COPY_SHARDS, MAX_CARRIED, PACKED_CAPABILITY, packed_task_id

RUNNER = "4242@1.000"


def spec(shard_id: str, sizes: list[int], options: dict[str, Any] | None = None) -> dict[str, Any]:
    """A shard of files of ``sizes`` from store src to store dst."""
    return ShardSpec(shard_id=shard_id, activity_run_id=shard_id.rsplit("-", 1)[0], index=0,
                     source_store=StoreSpec("src", "file", "/tmp/src"), source_path="",
                     sink_store=StoreSpec("dst", "file", "/tmp/dst"), sink_path="",
                     entries=tuple(Entry(f"f{i}", size, 0.0) for i, size in enumerate(sizes)),
                     options=options or {}).to_json()


def add(state: SiteState, count: int, *, sizes: list[int] | None = None, first: int = 0,
        run: str = "ar1", options: dict[str, Any] | None = None) -> list[str]:
    ids = [f"{run}-{i:05d}" for i in range(first, first + count)]
    for shard_id in ids:
        state.save_shard(shard_id, spec(shard_id, [10] if sizes is None else sizes, options))
    state.push_pending(*ids)
    return ids


def packing_placer(state: SiteState, sender: Celery, *, max_queued: int = 0, max_carried: int = MAX_CARRIED,
                   cloud: Any = None) -> Placer:
    built = ShardMessages.of(sender)
    assert built is not None
    return Placer(state=state, sender=sender, cloud=cloud, holding=lambda: True, max_queued=max_queued,
                  epoch=lambda: 1, messages=built, max_carried=max_carried)


def node(state: SiteState, name: str, limit: int, **extra: Any) -> None:
    """A live node of this version (it runs packed messages)."""
    beat(state, name, limit, **{PACKED_CAPABILITY: MAX_CARRIED, **extra})


def carried_by(client: redis_lib.Redis, name: str) -> list[list[str]]:
    """The shard ids of each message in ``node.<name>``'s queue, oldest first."""
    out = []
    for task, _task_id, args in messages(client, name):
        out.append([s for s, _a in args[0]] if task == COPY_SHARDS else [args[0]])
    return out


def start(state: SiteState, shard_id: str, attempt: int, name: str, *, carried: bool = True) -> str:
    return begin_run(state, shard_id, attempt, name, runner=RUNNER, alive=lambda _t: False, epoch=1,
                     carried=carried).outcome


def test_free_slots_for_the_backlog_keep_one_shard_per_message(state: SiteState, sender: Celery,
                                                              redis_client: redis_lib.Redis) -> None:
    state.redis.set(state.keys.epoch, 1)
    node(state, "a", 4)
    ids = add(state, 3)

    placed = packing_placer(state, sender).place_pending()

    assert [p.shard_id for p in placed] == ids
    assert [m[0] for m in messages(redis_client, "a")] == [COPY_SHARD] * 3
    assert state.carried("a") == set()


def test_a_backlog_of_small_shards_rides_in_few_messages_each_shard_its_own_attempt(
        state: SiteState, sender: Celery, redis_client: redis_lib.Redis) -> None:
    state.redis.set(state.keys.epoch, 1)
    node(state, "a", 2)
    ids = add(state, 11)
    outbox = PlacementOutbox(state)

    placed = packing_placer(state, sender, cloud=outbox).place_pending()

    # 11 shards for 2 free slots: 2 messages, the backlog spread over them (6 + 5).
    assert sorted(p.shard_id for p in placed) == ids
    assert all(p.attempt == 1 and p.node == "a" for p in placed)
    assert carried_by(redis_client, "a") == [ids[:6], ids[6:]]
    (task, task_id, args), _second = messages(redis_client, "a")
    assert (task, task_id, args) == (COPY_SHARDS, packed_task_id([(ids[0], 1)] * 6),
                                     [[[s, 1] for s in ids[:6]]])
    assert state.pending() == []
    assert state.queued("a") == set(ids)
    assert state.carried("a") == set(ids[1:6]) | set(ids[7:])
    # Each shard has its own placement, attempt and report.
    reports = [json.loads(r) for r in redis_client.lrange(state.keys.placements, 0, -1)]
    assert sorted(r["shard_id"] for r in reports) == ids
    assert {r["report"]["attempt"] for r in reports} == {1}
    assert all(state.shard(s)["attempt"] == 1 and state.shard(s)["node"] == "a" for s in ids)
    # Two messages fill the node's two slots: its jobs are 2 messages, not 11 shards.
    (load,) = node_loads(state)
    assert (load.queued, load.carried, load.free_slots) == (11, 9, 0)


def test_the_node_counts_a_packed_message_as_one_slot_while_its_shards_run(
        state: SiteState, sender: Celery, redis_client: redis_lib.Redis) -> None:
    state.redis.set(state.keys.epoch, 1)
    node(state, "a", 2)
    ids = add(state, 6)
    packing_placer(state, sender).place_pending()
    first, second = carried_by(redis_client, "a")

    assert start(state, first[0], 1, "a") == STARTED
    (load,) = node_loads(state)
    assert (load.running, load.queued, load.carried, load.free_slots) == (1, 5, 4, 0)
    state.mark_finished(first[0], 1, "a", ok=True)
    assert start(state, first[1], 1, "a") == STARTED  # the next shard of the same message
    (load,) = node_loads(state)
    assert (load.running, load.queued - load.carried, load.free_slots) == (1, 1, 0)
    assert first[1] not in state.carried("a")
    assert len(ids) == len(first) + len(second)


def test_large_slow_and_unknown_shards_are_never_packed(state: SiteState, sender: Celery,
                                                        redis_client: redis_lib.Redis) -> None:
    state.redis.set(state.keys.epoch, 1)
    node(state, "a", 1)
    many = add(state, 3, sizes=[1] * (SMALL_MAX_FILES + 1), run="many")
    big = add(state, 3, sizes=[SMALL_MAX_BYTES + 1], run="big")
    unknown = add(state, 3, sizes=[-1], run="unknown")
    throttled = add(state, 3, run="throttled", options={"bandwidth": 1024})  # its time is the limit's
    small = add(state, 3, run="small")

    packing_placer(state, sender, max_queued=20).place_pending()

    sent = carried_by(redis_client, "a")
    assert sent[:12] == [[s] for s in many + big + unknown + throttled]
    assert [s for message in sent[12:] for s in message] == small
    assert len(sent[12:]) < len(small)


def test_a_node_that_does_not_say_it_takes_packed_messages_gets_one_shard_per_message(
        state: SiteState, sender: Celery, redis_client: redis_lib.Redis) -> None:
    state.redis.set(state.keys.epoch, 1)
    beat(state, "old", 1, version="0.1.0")  # an earlier version: no capability in its beat
    ids = add(state, 4)

    packing_placer(state, sender, max_queued=3).place_pending()

    assert carried_by(redis_client, "old") == [[s] for s in ids]


def test_packing_off_keeps_one_shard_per_message(state: SiteState, sender: Celery,
                                                  redis_client: redis_lib.Redis) -> None:
    state.redis.set(state.keys.epoch, 1)
    node(state, "a", 1)
    ids = add(state, 3)

    packing_placer(state, sender, max_queued=2, max_carried=1).place_pending()

    assert carried_by(redis_client, "a") == [[s] for s in ids]


def test_shards_waiting_for_room_keep_the_busy_reason(state: SiteState, sender: Celery) -> None:
    state.redis.set(state.keys.epoch, 1)
    node(state, "a", 1)
    ids = add(state, 12)  # one message carries 8; four wait

    placer = packing_placer(state, sender)
    placer.place_pending()

    assert len(state.pending()) == 4
    assert all(placer.wait_reason(s) == ALL_NODES_BUSY for s in state.pending())
    assert set(ids) - set(state.pending()) == state.queued("a")


def test_a_shard_of_a_packed_message_given_a_new_attempt_is_stale_on_the_old_message(
        state: SiteState, sender: Celery, redis_client: redis_lib.Redis) -> None:
    state.redis.set(state.keys.epoch, 1)
    node(state, "a", 1)
    node(state, "b", 2)
    add(state, 8)
    packing_placer(state, sender).place_pending()
    (on_a,) = carried_by(redis_client, "a")
    assert len(on_a) == 3
    moved, reissued = on_a[1], on_a[2]

    # Node a goes offline: every shard of it is requeued (the old message fenced off) ...
    assert reissue(state, reissued, "a", attempt=1, epoch=1) == 2  # (a new dispatcher's take-over)
    assert reissued not in state.carried("a")
    state.redis.delete(state.keys.heartbeat("a"))
    assert moved in requeue_offline(state, epoch=1)
    assert state.carried("a") == set()
    # ... and placed again on b (grown meanwhile), where it runs; the old message's copy is stale.
    node(state, "b", 4)
    placed = packing_placer(state, sender).place_pending()
    assert moved in {p.shard_id for p in placed}
    assert all(p.node == "b" for p in placed)
    assert start(state, moved, 1, "a") == STALE
    assert start(state, reissued, 1, "a") == STALE
    assert start(state, moved, int(state.shard(moved)["attempt"]), "b") == STARTED


def test_the_rebalancer_moves_a_carried_shard_to_an_idle_node_and_fences_its_copy(
        state: SiteState, sender: Celery, redis_client: redis_lib.Redis) -> None:
    state.redis.set(state.keys.epoch, 1)
    node(state, "a", 1)
    ids = add(state, 4)
    placer = packing_placer(state, sender)
    placer.place_pending()
    assert carried_by(redis_client, "a") == [ids]
    assert start(state, ids[0], 1, "a") == STARTED
    node(state, "b", 2)  # a node joins with free slots

    moves = Rebalancer(placer).rebalance_now()

    moved = {m.shard_id for m in moves}
    assert moved and moved <= set(ids[1:])
    assert state.carried("a") == set(ids[1:]) - moved
    assert (node_loads(state)[0].free_slots, node_loads(state)[1].free_slots) == (0, 2 - len(moved))
    for shard_id in moved:
        assert start(state, shard_id, 1, "a") == STALE


def test_a_carried_shard_waiting_behind_a_running_one_is_not_taken_for_stranded(
        state: SiteState, sender: Celery, redis_client: redis_lib.Redis) -> None:
    state.redis.set(state.keys.epoch, 1)
    node(state, "a", 1)
    ids = add(state, 3)
    packing_placer(state, sender, max_queued=0).place_pending()
    assert carried_by(redis_client, "a") == [ids]
    # The node's worker took the message (its queue is empty) and runs its first shard; it
    # has grown to two pool processes since: one is free.
    redis_client.delete(*redis_client.keys("*node.a*"))
    assert start(state, ids[0], 1, "a") == STARTED
    state.publish_worker_load("a", running=1, limit=2, pids=[1], ttl=30)
    clock = [0.0]
    watch = StrandedWatch(grace=5.0, clock=lambda: clock[0])

    assert watch.check(state, packing_placer(state, sender), epoch=1) == []
    clock[0] = 10.0
    assert watch.check(state, packing_placer(state, sender), epoch=1) == []
    assert state.queued("a") == set(ids[1:])
