"""The node worker's acks-late bookkeeping in one script call a step (workers.unacked),
against a real Redis: the same keys and values as kombu's MULTI/EXEC wrote, so kombu's own
restore of an unacked message (the visibility timeout) brings it back, and an ack removes it.

Given a kombu connection set up as a dmg worker's (Celery's transport options with the
gateway's key prefix, our transport), then:

- a delivered, unacked message is in the prefixed unacked hash as ``[message, exchange,
  routing key]`` and in the unacked index with the delivery time, and nowhere unprefixed;
- the ack removes it from both;
- a consumer that dies without acking (its connection dropped, no restore at shutdown)
  leaves it there, and kombu's ``restore_visible`` on another connection, after the
  visibility timeout, puts it back in the queue, where a new consumer gets it again;
- after Redis is restarted (an empty script cache) delivery and ack still work.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib
from kombu import Connection

from dmg.embedded.redis import EmbeddedRedis
from settings import Settings
from settings.celery import broker_key_prefix, celery_config
from tests.waiting import wait_for
from tests.workers.test_brokerloss import where_is_the_message
from tests.workers.test_keptclient import GATEWAY, QUEUE, publish, receive_one
from workers.keptclient import TRANSPORT
from workers.unacked import OneCallQoS

PREFIX = broker_key_prefix(GATEWAY)


def open_connection(url: str, **extra: float) -> Connection:
    options = celery_config(Settings(redis_url=url, gateway=GATEWAY))["broker_transport_options"]
    conn = Connection(url, transport=TRANSPORT, transport_options={**options, **extra})
    conn.ensure_connection(max_retries=3)
    return conn


@pytest.fixture
def client(broker: EmbeddedRedis) -> Iterator[redis_lib.Redis]:
    plain = redis_lib.Redis.from_url(broker.url)
    try:
        yield plain
    finally:
        plain.close()


def test_unacked_message_is_recorded_as_kombu_records_it_and_the_ack_removes_it(
        broker: EmbeddedRedis, client: redis_lib.Redis) -> None:
    conn = open_connection(broker.url)
    try:
        assert isinstance(conn.default_channel.qos, OneCallQoS)
        publish(conn, {"n": 1})
        before = time.time()
        message = receive_one(conn)
        tag = message.delivery_tag
        stored = client.hget(f"{PREFIX}unacked", tag)
        assert stored is not None
        raw, exchange, routing_key = json.loads(stored)
        assert raw["properties"]["delivery_tag"] == tag  # kombu's raw message, as delivered
        assert (exchange, routing_key) == (QUEUE, QUEUE)
        score = client.zscore(f"{PREFIX}unacked_index", tag)
        assert score is not None and before - 1 <= score <= time.time() + 1
        assert not client.exists("unacked", "unacked_index")  # nothing written unprefixed
        message.ack()
        assert client.hlen(f"{PREFIX}unacked") == 0
        assert client.zcard(f"{PREFIX}unacked_index") == 0
        assert where_is_the_message(broker) == (0, 0)
    finally:
        with contextlib.suppress(Exception):
            conn.release()


def test_an_unacked_message_of_a_dead_consumer_is_restored_after_the_visibility_timeout(
        broker: EmbeddedRedis) -> None:
    dead = open_connection(broker.url)
    publish(dead, {"n": 7})
    receive_one(dead)  # delivered, never acked
    dead.default_channel.qos.restore_at_shutdown = False  # as a SIGKILLed worker: no restore
    channel: Any = dead.default_channel
    channel.client.connection_pool.disconnect()
    assert where_is_the_message(broker) == (0, 1)
    survivor = open_connection(broker.url, visibility_timeout=0.2)
    try:
        def restored() -> bool:
            survivor.default_channel.qos.restore_visible(num=10, interval=1)
            return where_is_the_message(broker) == (1, 0)

        wait_for(restored, timeout=10, interval=0.05, what="the message back in its queue")
        assert where_is_the_message(broker) == (1, 0)  # back in the queue, out of the unacked set
        again = receive_one(survivor)
        assert again.payload == {"n": 7}
        again.ack()
        assert where_is_the_message(broker) == (0, 0)
    finally:
        with contextlib.suppress(Exception):
            survivor.release()


def test_delivery_and_ack_work_after_redis_restarts_with_an_empty_script_cache(
        broker: EmbeddedRedis, client: redis_lib.Redis) -> None:
    conn = open_connection(broker.url)
    try:
        publish(conn, {"n": 1})
        receive_one(conn).ack()
        broker.restart()
        publish(conn, {"n": 2})  # the broken pooled connection is dropped and made again
        channel = conn.default_channel
        message = channel.basic_get(QUEUE)  # kombu's _get, then our append
        assert message is not None and message.decode() == {"n": 2}
        assert where_is_the_message(broker) == (0, 1)
        channel.basic_ack(message.delivery_tag)
        assert where_is_the_message(broker) == (0, 0)
    finally:
        with contextlib.suppress(Exception):
            conn.release()
