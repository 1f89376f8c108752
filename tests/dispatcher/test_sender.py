"""The dispatcher's Celery sender: a shard's message goes out with no result subscription
(against a real Redis: its own command counters)."""

from __future__ import annotations

import redis as redis_lib

from dispatcher.loop import make_sender
from settings import Settings
from settings.celery import broker_key_prefix
from workers.names import COPY_SHARD, copy_task_id, node_queue


def subscriptions(client: redis_lib.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_subscribe", {}).get("calls", 0))


def test_sending_a_shard_subscribes_to_no_result(redis_url: str) -> None:
    client = redis_lib.Redis.from_url(redis_url)
    app = make_sender(Settings(redis_url=redis_url, gateway="gw"))
    try:
        before = subscriptions(client)

        app.send_task(COPY_SHARD, args=["ar1-00000", 1], queue=node_queue("a"),
                      task_id=copy_task_id("ar1-00000", 1))

        assert client.llen(broker_key_prefix("gw") + node_queue("a")) == 1  # the message is queued
        assert subscriptions(client) == before  # and nobody waits for its result here
    finally:
        app.close()
        client.close()
