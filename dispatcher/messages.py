"""A shard's Celery message, built by the dispatcher itself: written to the broker in the
placement's own script (:func:`dmg.site.placing.place_shard`).

The message is the one ``Celery.send_task`` writes for ``dmg.copy_shard`` (task message
protocol 2, JSON, as kombu's Redis transport stores it: ``LPUSH`` of the envelope on the
node's queue key), and the ``task-sent`` event beside it (``PUBLISH`` on the event
exchange's topic), so workers and Flower see an ordinary Celery task. Building it costs
~0.03 ms of CPU against ~0.7 ms for ``send_task`` (Celery's router and amqp layers, kombu's
producer and its two round trips; Celery/kombu 5.7.0, both at a load of ~10), and writing it inside the
placement script makes the attempt, its placement report and its message one atomic step.

:class:`ShardMessages` takes the key prefix, the virtual host (Redis database) and the
event exchange from the Celery app's configuration; ``tests/dispatcher/test_messages.py``
checks the result against what ``send_task`` writes to a real Redis.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from celery.utils.time import utcoffset

from workers.names import COPY_SHARD, COPY_SHARDS, copy_task_id, node_queue, packed_task_id

#: The event exchange and routing key of a sent task (Celery's ``task-sent`` event).
EVENT_EXCHANGE = "celeryev"
EVENT_ROUTING_KEY = "task.sent"


@dataclass(frozen=True)
class BuiltMessage:
    queue_key: str  # the node queue's Redis key (with the broker's key prefix)
    message: str  # the kombu envelope to LPUSH
    event_channel: str  # "" when the app sends no task-sent event
    event: str


class ShardMessages:
    """Builds ``dmg.copy_shard`` (and ``dmg.copy_shards``) messages for a Celery app on a Redis broker."""

    def __init__(self, *, key_prefix: str, virtual_host: str, reply_to: str, sent_event: bool,
                 hostname: str | None = None) -> None:
        self.key_prefix = key_prefix
        self.reply_to = reply_to
        self.sent_event = sent_event
        # Celery's anonymous node name for a sender (celery.utils.nodenames.anon_nodename).
        self.hostname = hostname or f"gen{os.getpid()}@{socket.gethostname()}"
        db = virtual_host.strip("/") or "0"
        # kombu 5.7.0 (transport/redis.py): keyprefix_fanout '/{db}.', fanout_patterns on.
        self.event_channel = f"{key_prefix}/{db}.{EVENT_EXCHANGE}/{EVENT_ROUTING_KEY}" if sent_event else ""
        self._clock = 0

    @classmethod
    def of(cls, app: Any) -> ShardMessages | None:
        """The builder for ``app`` (a Celery app), or None when it cannot build for it (not
        Celery, a broker other than Redis, a serializer other than JSON): placement then
        sends with ``send_task``."""
        conf = getattr(app, "conf", None)
        if conf is None or not hasattr(app, "connection_for_write"):
            return None
        if conf.task_serializer != "json" or conf.task_protocol != 2 or conf.task_compression:
            return None
        connection = app.connection_for_write()
        try:
            if connection.transport_cls not in ("redis", "rediss", "sentinel"):
                return None
            options = dict(connection.transport_options or {})
            if options.get("priority_steps") or options.get("sep"):
                return None  # queue keys of another shape: keep kombu's own
            return cls(key_prefix=str(options.get("global_keyprefix") or ""),
                       virtual_host=str(connection.virtual_host or "0"), reply_to=str(app.thread_oid),
                       sent_event=bool(conf.task_send_sent_event))
        finally:
            connection.release()

    def build(self, shard_id: str, attempt: int, *, node: str, epoch: int | None) -> BuiltMessage:
        """The message of ``attempt`` of ``shard_id`` for ``node``'s queue (and its event)."""
        return self._build(COPY_SHARD, copy_task_id(shard_id, attempt), [shard_id, attempt], node=node,
                           epoch=epoch)

    def build_packed(self, shards: list[tuple[str, int]], *, node: str, epoch: int | None) -> BuiltMessage:
        """The one ``dmg.copy_shards`` message carrying ``shards`` (id, attempt) for ``node``."""
        return self._build(COPY_SHARDS, packed_task_id(shards), [[list(s) for s in shards]], node=node,
                           epoch=epoch)

    def _build(self, task: str, task_id: str, args: list[Any], *, node: str,
               epoch: int | None) -> BuiltMessage:
        queue = node_queue(node)
        kwargs: dict[str, Any] = {"epoch": epoch} if epoch is not None else {}
        body = json.dumps([args, kwargs, {"callbacks": None, "errbacks": None, "chain": None,
                                          "chord": None}])
        headers: dict[str, Any] = {
                   "lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None,
                   "expires": None, "group": None, "group_index": None, "retries": 0,
                   "timelimit": [None, None], "root_id": task_id, "parent_id": None,
                   "argsrepr": repr(args), "kwargsrepr": repr(kwargs), "origin": self.hostname,
                   "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None,
                   "stamps": {}}
        message = json.dumps({
            "body": _b64(body), "content-encoding": "utf-8", "content-type": "application/json",
            "headers": headers,
            "properties": {"correlation_id": task_id, "reply_to": self.reply_to, "delivery_mode": 2,
                           "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
                           "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}})
        event = ""
        if self.sent_event:
            self._clock += 1
            payload = json.dumps({
                "hostname": self.hostname, "utcoffset": utcoffset(), "pid": os.getpid(), "clock": self._clock,
                "uuid": task_id, "root_id": task_id, "parent_id": None, "name": task,
                "args": repr(args), "kwargs": repr(kwargs), "retries": 0, "eta": None, "expires": None,
                "queue": queue, "exchange": "", "routing_key": queue, "timestamp": time.time(),
                "type": "task-sent"})
            event = json.dumps({
                "body": _b64(payload), "content-encoding": "utf-8", "content-type": "application/json",
                "headers": {"hostname": self.hostname},
                "properties": {"delivery_mode": 1,
                               "delivery_info": {"exchange": EVENT_EXCHANGE,
                                                 "routing_key": EVENT_ROUTING_KEY},
                               "priority": 0, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}})
        return BuiltMessage(self.key_prefix + queue, message, self.event_channel, event)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
