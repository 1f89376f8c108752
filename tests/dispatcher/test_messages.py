"""One-step placement (dmg.site.placing) with messages the dispatcher builds itself
(dispatcher.messages), against a real Redis: the message is the one Celery's send_task
writes, and the attempt, its report, its message and the pending entry go together or not
at all."""

from __future__ import annotations

import base64
import json
from typing import Any

import redis as redis_lib
from celery import Celery

from dispatcher.messages import ShardMessages
from dispatcher.placement import Placer
from dispatcher.reports import PlacementOutbox
from dmg.site.attempts import requeue
from dmg.site.placing import CHANGED, SUPERSEDED, place_shard
from dmg.site.state import SiteState
from settings.celery import broker_key_prefix
from tests.dispatcher.test_placement import add_shards
from tests.sitekit import beat
from workers.names import COPY_SHARD, copy_task_id, node_queue

QUEUE_KEY = broker_key_prefix("gw") + node_queue("a")


def decoded(raw: bytes | str) -> dict[str, Any]:
    message = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


def without(message: dict[str, Any], *, headers: tuple[str, ...] = (), props: tuple[str, ...] = (),
            body: tuple[str, ...] = ()) -> dict[str, Any]:
    for key in headers:
        message["headers"].pop(key, None)
    for key in props:
        message["properties"].pop(key, None)
    for key in body:
        message["body"].pop(key, None)
    return message


def builder(sender: Celery) -> ShardMessages:
    messages = ShardMessages.of(sender)
    assert messages is not None
    return messages


def test_the_built_message_is_what_send_task_writes(sender: Celery, redis_client: redis_lib.Redis) -> None:
    listener = redis_client.pubsub()
    listener.psubscribe(broker_key_prefix("gw") + "*celeryev*")
    listener.get_message(timeout=1.0)  # the subscription's confirmation

    sender.send_task(COPY_SHARD, args=["ar1-00000", 3], kwargs={"epoch": 7}, queue=node_queue("a"),
                     task_id=copy_task_id("ar1-00000", 3))
    raw = redis_client.rpop(QUEUE_KEY)
    assert isinstance(raw, bytes)
    celery_message = decoded(raw)
    celery_event = listener.get_message(timeout=2.0)
    built = builder(sender).build("ar1-00000", 3, node="a", epoch=7)

    assert built.queue_key == QUEUE_KEY
    ignored = {"headers": ("origin",), "props": ("delivery_tag",)}
    assert without(decoded(built.message), **ignored) == without(celery_message, **ignored)
    assert celery_event is not None and built.event_channel == celery_event["channel"].decode()
    event_ignored = {"headers": ("hostname",), "props": ("delivery_tag",),
                     "body": ("hostname", "pid", "clock", "timestamp")}
    assert (without(decoded(built.event), **event_ignored)
            == without(decoded(celery_event["data"]), **event_ignored))
    listener.close()


def test_a_placement_is_one_step_with_its_report_and_message(state: SiteState, sender: Celery,
                                                            redis_client: redis_lib.Redis) -> None:
    beat(state, "a", 4)
    ids = add_shards(state, 3)
    outbox = PlacementOutbox(state)
    placer = Placer(state=state, sender=sender, cloud=outbox, holding=lambda: True, max_queued=0,
                    epoch=lambda: int(state.redis.get(state.keys.epoch) or 0) or None,
                    messages=builder(sender))
    state.redis.set(state.keys.epoch, 5)

    placed = placer.place_pending()

    assert [(p.shard_id, p.node, p.attempt) for p in placed] == [(i, "a", 1) for i in ids]
    assert state.pending() == []
    assert state.queued("a") == set(ids)
    tasks = [decoded(raw) for raw in reversed(redis_client.lrange(QUEUE_KEY, 0, -1))]
    assert [(t["headers"]["id"], t["body"][0], t["body"][1]) for t in tasks] == [
        (copy_task_id(i, 1), [i, 1], {"epoch": 5}) for i in ids]
    reports = [json.loads(raw) for raw in redis_client.lrange(state.keys.placements, 0, -1)]
    assert [(r["shard_id"], r["report"]["attempt"], r["report"]["node"], r["report"]["epoch"])
            for r in reports] == [(i, 1, "a", 5) for i in ids]
    assert outbox.recorded.is_set()  # the report sender is woken


def test_a_requeued_shard_is_placed_with_the_attempt_its_requeue_fenced_with(
        state: SiteState, sender: Celery, redis_client: redis_lib.Redis) -> None:
    beat(state, "a", 4)
    [shard_id] = add_shards(state, 1)
    placer = Placer(state=state, sender=sender, cloud=None, holding=lambda: True, max_queued=0,
                    messages=builder(sender))
    placer.place_pending()
    assert requeue(state, shard_id, "a") == 2  # attempt 1 is fenced by attempt 2, not sent yet

    [again] = placer.place_pending()

    assert again.attempt == 2  # no gap: the fencing number is the one sent
    stored = state.shard(shard_id)
    assert stored is not None and stored["attempt"] == 2
    ids = [decoded(raw)["headers"]["id"] for raw in reversed(redis_client.lrange(QUEUE_KEY, 0, -1))]
    assert ids == [copy_task_id(shard_id, 1), copy_task_id(shard_id, 2)]


def test_a_shard_that_moved_since_it_was_read_gets_nothing(state: SiteState, sender: Celery,
                                                           redis_client: redis_lib.Redis) -> None:
    [shard_id] = add_shards(state, 1)
    built = builder(sender).build(shard_id, 2, node="a", epoch=None)  # attempt 1 is the next one

    answer = place_shard(state, shard_id, "a", attempt=2, epoch=None, report_entry="r",
                         queue_key=built.queue_key, message=built.message)

    assert answer == CHANGED
    stored = state.shard(shard_id)
    assert stored is not None and stored["attempt"] == 0 and stored["node"] == ""
    assert state.pending() == [shard_id]
    assert redis_client.llen(QUEUE_KEY) == 0 and redis_client.llen(state.keys.placements) == 0


def test_a_superseded_dispatcher_places_nothing_and_its_successor_places_once(
        state: SiteState, sender: Celery, redis_client: redis_lib.Redis) -> None:
    """A dispatcher that planned, then paused (or died) before placing: its successor's
    placement is the only one; the old one, waking up, writes nothing."""
    beat(state, "a", 4)
    [shard_id] = add_shards(state, 1)
    state.redis.set(state.keys.epoch, 8)  # a newer dispatcher took the lease (epoch 7 -> 8)
    old = Placer(state=state, sender=sender, cloud=PlacementOutbox(state), holding=lambda: True,
                 max_queued=0, epoch=lambda: 7, messages=builder(sender))
    new = Placer(state=state, sender=sender, cloud=PlacementOutbox(state), holding=lambda: True,
                 max_queued=0, epoch=lambda: 8, messages=builder(sender))

    assert old.place_pending() == []
    assert state.pending() == [shard_id] and redis_client.llen(QUEUE_KEY) == 0

    [placed] = new.place_pending()
    assert old.place_pending() == [] and new.place_pending() == []

    assert placed.attempt == 1
    assert redis_client.llen(QUEUE_KEY) == 1  # one message, one report, whatever came after
    assert redis_client.llen(state.keys.placements) == 1
    built = builder(sender).build(shard_id, 2, node="a", epoch=7)
    assert place_shard(state, shard_id, "a", attempt=2, epoch=7, report_entry="r",
                       queue_key=built.queue_key, message=built.message) == SUPERSEDED
