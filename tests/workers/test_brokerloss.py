"""The kombu 5.7.0 failure a Redis restart caused, and its workaround (workers.brokerloss),
against a real Redis stopped with SIGTERM and started again.

Given a kombu connection set up as a dmg worker's (Celery's transport options, key
prefix): a task consumer on the default channel holding one unacknowledged message with
a ``BRPOP`` pending for the next, and a broadcast (fanout) consumer on a second channel
as Celery's remote control has; when Redis goes away and Celery cleans up
(``collect()`` then ``close()``), then:

- without the workaround ``close()`` raises kombu's AttributeError (the one that killed
  the workers; this test fails once kombu fixes it, and the workaround can go);
- with it, nothing raises, every channel is closed, and the unacknowledged message is
  not lost: it is back in the queue when Redis was back in time, else still in Redis's
  unacked set (kombu restores it after the visibility timeout).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis as redis_lib
from kombu import Connection, Consumer, Exchange, Producer, Queue

from dmg.embedded.redis import EmbeddedRedis
from settings import Settings
from settings.celery import broker_key_prefix, celery_config
from workers.brokerloss import close_channels_on_collect, open_channels

GATEWAY = "lossgw"
QUEUE = "node.loss"


@dataclass
class Worker:
    """A kombu connection in the state a dmg worker's is in while a shard runs."""

    connection: Connection
    channels: list[Any]
    delivered: list[Any]


@pytest.fixture
def worker(broker: EmbeddedRedis) -> Iterator[Worker]:
    options = celery_config(Settings(redis_url=broker.url, gateway=GATEWAY))["broker_transport_options"]
    connection = Connection(broker.url, transport_options=options)
    connection.ensure_connection(max_retries=3)
    tasks = Queue(QUEUE, Exchange(QUEUE, "direct"), QUEUE)
    Producer(connection.channel()).publish({"shard": "s1"}, exchange=tasks.exchange, routing_key=QUEUE,
                                           declare=[tasks])
    delivered: list[Any] = []
    task_channel = connection.default_channel
    task_channel.basic_qos(0, 2, False)  # a free slot: the worker keeps a BRPOP pending
    Consumer(task_channel, [tasks], callbacks=[lambda _body, message: delivered.append(message)],
             accept=["json"]).consume()
    broadcast_channel = connection.channel()
    broadcast = Queue(f"{QUEUE}.pidbox", Exchange("loss.pidbox", "fanout"), auto_delete=True)
    Consumer(broadcast_channel, [broadcast], callbacks=[lambda _body, _message: None], no_ack=True,
             accept=["json"]).consume()
    deadline = time.monotonic() + 10
    while not delivered and time.monotonic() < deadline:
        with contextlib.suppress(socket.timeout):
            connection.drain_events(timeout=0.2)
    assert delivered, "the task message was not delivered"
    with contextlib.suppress(socket.timeout):
        connection.drain_events(timeout=0.2)  # leaves the next BRPOP pending
    assert getattr(task_channel, "_in_poll", None), "no BRPOP pending on the task channel"
    yield Worker(connection, [task_channel, broadcast_channel], delivered)
    with contextlib.suppress(Exception):
        connection.release()


def celery_cleanup(connection: Connection) -> None:
    """What Celery's consumer does after a lost connection (celery 5.7.0,
    ``Consumer.on_connection_error_after_connected``): collect, errors ignored, then close."""
    with contextlib.suppress(Exception):
        connection.collect(socket_timeout=2)
    connection.close()


def where_is_the_message(broker: EmbeddedRedis) -> tuple[int, int]:
    """(messages in the queue, messages in the unacked set) under the gateway's key prefix."""
    client = redis_lib.Redis.from_url(broker.url)
    prefix = broker_key_prefix(GATEWAY)
    try:
        queued = [json.loads(raw) for raw in client.lrange(f"{prefix}{QUEUE}", 0, -1)]
        unacked = client.hlen(f"{prefix}unacked")
    finally:
        client.close()
    return len(queued), unacked


def test_without_the_workaround_kombu_raises_attributeerror_after_a_redis_stop(
        broker: EmbeddedRedis, worker: Worker) -> None:
    broker.stop()
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'hostname'"):
        celery_cleanup(worker.connection)  # Celery's consumer dies of this: not a connection error


def test_with_the_workaround_the_cleanup_closes_every_channel_and_keeps_the_message(
        broker: EmbeddedRedis, worker: Worker) -> None:
    broker.stop()
    close_channels_on_collect(worker.connection)
    celery_cleanup(worker.connection)  # raises nothing
    assert all(channel.closed for channel in worker.channels)
    assert open_channels(worker.connection) == []
    broker.start()
    assert where_is_the_message(broker) == (0, 1)  # still unacked in Redis, not lost


def test_with_the_workaround_a_redis_back_in_time_gets_the_message_back_in_its_queue(
        broker: EmbeddedRedis, worker: Worker) -> None:
    broker.restart()
    close_channels_on_collect(worker.connection)
    celery_cleanup(worker.connection)
    assert all(channel.closed for channel in worker.channels)
    assert where_is_the_message(broker) == (1, 0)  # restored: another delivery will run it


def test_the_hook_is_installed_once(broker: EmbeddedRedis, worker: Worker) -> None:
    close_channels_on_collect(worker.connection)
    wrapped = worker.connection.collect
    close_channels_on_collect(worker.connection)
    assert worker.connection.collect is wrapped
