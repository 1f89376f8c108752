"""The node worker's kombu transport keeps one Redis client per channel (workers.keptclient,
a kombu 5.7.0 workaround), against a real Redis stopped with SIGTERM and started again.

Given a kombu connection set up as a dmg worker's (Celery's transport options, key prefix,
our transport), then:

- a node's Celery app picks our transport for redis://, rediss:// and sentinel:// URLs;
- publishing, consuming and acking reuse one client object on the channel (kombu builds one
  per call);
- after Redis is restarted under it, the channel publishes, delivers and acks again, on a
  client built on kombu's new pool;
- the kombu failure that killed the workers after a Redis stop is still caught by
  workers.brokerloss with our channels (the message is kept in Redis's unacked set).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from dmg.embedded.redis import EmbeddedRedis
from settings import Settings
from settings.celery import celery_config
from tests.workers.test_brokerloss import celery_cleanup, where_is_the_message
from workers.app import make_app
from workers.brokerloss import close_channels_on_collect, open_channels
from workers.keptclient import (
    SENTINEL_TRANSPORT,
    TRANSPORT,
    KeptClientChannel,
    SentinelTransport,
    Transport,
    keep_transport_on_switch,
)

GATEWAY = "lossgw"  # test_brokerloss's helpers look under this gateway's prefix
QUEUE = "node.loss"
TASKS = Queue(QUEUE, Exchange(QUEUE, "direct"), QUEUE)


@pytest.fixture
def connection(broker: EmbeddedRedis) -> Iterator[Connection]:
    options = celery_config(Settings(redis_url=broker.url, gateway=GATEWAY))["broker_transport_options"]
    conn = Connection(broker.url, transport=TRANSPORT, transport_options=options)
    conn.ensure_connection(max_retries=3)
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.release()


def publish(conn: Connection, body: dict[str, Any]) -> None:
    producer = Producer(conn.default_channel)
    conn.ensure(producer, producer.publish, max_retries=20, interval_start=0.2, interval_step=0.2)(
        body, exchange=TASKS.exchange, routing_key=QUEUE, declare=[TASKS])


def receive_one(conn: Connection, *, timeout: float = 10.0) -> Any:
    """The next message of the queue, through a consumer on the default channel (not acked)."""
    got: list[Any] = []
    channel = conn.default_channel
    channel.basic_qos(0, 1, False)
    consumer = Consumer(channel, [TASKS], callbacks=[lambda _body, message: got.append(message)],
                        accept=["json"])
    consumer.consume()
    deadline = time.monotonic() + timeout
    while not got and time.monotonic() < deadline:
        with contextlib.suppress(socket.timeout):
            conn.drain_events(timeout=0.2)
    consumer.cancel()
    assert got, "no message delivered"
    return got[0]


def test_a_node_app_uses_the_kept_client_transport_for_each_redis_scheme() -> None:
    for url, expected in (("redis://127.0.0.1:1/0", Transport), ("rediss://127.0.0.1:1/0", Transport),
                          ("sentinel://127.0.0.1:1/0;sentinel://127.0.0.1:2/0", SentinelTransport)):
        app = make_app(Settings(redis_url=url, gateway="gw"))
        assert app.connection_for_write().get_transport_cls() is expected, url


def test_publish_consume_and_ack_reuse_one_client(connection: Connection, broker: EmbeddedRedis) -> None:
    channel = connection.default_channel
    assert isinstance(channel, KeptClientChannel)
    with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
        assert first is second
    publish(connection, {"n": 1})
    message = receive_one(connection)
    assert message.payload == {"n": 1}
    message.ack()
    with channel.conn_or_acquire() as after:
        assert after is first
    assert where_is_the_message(broker) == (0, 0)  # acked: neither queued nor unacked


def get_and_ack(channel: Any) -> dict[str, Any]:
    """Take the next message with ``basic_get`` and ack it: both through the channel's
    synchronous client (kombu's ``_get`` and its unacked bookkeeping)."""
    message = channel.basic_get(QUEUE)
    assert message is not None, "no message in the queue"
    payload = message.decode()
    channel.basic_ack(message.delivery_tag)
    return dict(payload)


def test_the_kept_client_works_again_after_redis_is_restarted(connection: Connection,
                                                              broker: EmbeddedRedis) -> None:
    channel = connection.default_channel
    publish(connection, {"n": 1})
    receive_one(connection).ack()
    with channel.conn_or_acquire() as before:
        pass
    broker.restart()
    publish(connection, {"n": 2})  # the broken pooled connection is dropped and made again
    assert get_and_ack(channel) == {"n": 2}
    with channel.conn_or_acquire() as same:
        assert same is before  # the same client, on a new connection
    assert where_is_the_message(broker) == (0, 0)
    channel._disconnect_pools()  # what kombu does after a lost connection: a new pool...
    with channel.conn_or_acquire() as rebuilt:
        assert rebuilt is not before  # ...and a client on it
        assert rebuilt.connection_pool is channel.pool
    publish(connection, {"n": 3})
    assert get_and_ack(channel) == {"n": 3}
    assert where_is_the_message(broker) == (0, 0)


def test_brokerloss_still_keeps_the_message_with_the_kept_client(connection: Connection,
                                                                 broker: EmbeddedRedis) -> None:
    publish(connection, {"n": 1})
    receive_one(connection)  # delivered, not acked
    broker.stop()
    close_channels_on_collect(connection)
    celery_cleanup(connection)  # raises nothing
    assert open_channels(connection) == []
    broker.start()
    assert where_is_the_message(broker) == (0, 1)  # still unacked in Redis, not lost


def test_a_switch_to_the_next_sentinel_keeps_our_transport() -> None:
    conn = Connection("sentinel://127.0.0.1:1/0;sentinel://127.0.0.1:2/0", transport=SENTINEL_TRANSPORT)
    keep_transport_on_switch(conn)
    keep_transport_on_switch(conn)  # once only
    conn.maybe_switch_next()
    assert conn.hostname == "127.0.0.1" and conn.port == 2
    assert conn.get_transport_cls() is SentinelTransport
