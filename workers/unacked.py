"""kombu's Redis acks-late bookkeeping in one command per step instead of a MULTI/EXEC.

kombu 5.7.0's ``kombu.transport.redis.QoS`` records every message it hands to Celery
before Celery sees it (``append``: ``ZADD unacked_index`` + ``HSET unacked`` in a
MULTI/EXEC pipeline) and forgets it on the ack (``ack``: ``ZREM`` + ``HDEL``, MULTI/EXEC
again). Each redis-py pipeline builds a ``Pipeline`` object and packs and parses four
commands (MULTI, the two, EXEC): 17 % and 11 % of a node worker's main process by a GIL
profile at load. :class:`OneCallQoS` sends each step as one ``EVAL`` of a two-line Lua
script instead: the same two keys written or removed together, atomically (a script runs
whole, as MULTI/EXEC did), in one round trip, so kombu's restore of unacked messages
(``restore_visible``, ``restore_unacked`` at shutdown, the visibility timeout) finds
exactly what it found before. ``EVAL`` rather than ``EVALSHA``: a restarted or failed-over
broker has an empty script cache, and ``EVAL`` needs no NOSCRIPT retry.

The keys get the channel's ``global_keyprefix`` here: kombu's prefixing client
(``PrefixedStrictRedis``) prefixes the keys of the commands it knows, not ``EVAL``'s.
A reject (rare) keeps kombu's own path. Remove once kombu's QoS does this itself.
"""

from __future__ import annotations

import time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import base as virtual
from kombu.utils.json import dumps

#: KEYS: the unacked index (sorted set), the unacked hash; ARGV: the time, the tag, the message.
APPEND = (
    "redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2]) "
    "redis.call('HSET', KEYS[2], ARGV[2], ARGV[3]) return 1"
)
#: KEYS: the unacked index, the unacked hash; ARGV: the tag.
ACK = "redis.call('ZREM', KEYS[1], ARGV[1]) redis.call('HDEL', KEYS[2], ARGV[1]) return 1"


class OneCallQoS(kombu_redis.QoS):
    """kombu's Redis QoS whose ``append`` and ``ack`` are one script call each."""

    channel: Any
    #: The prefixed (unacked index, unacked hash) keys, built on first use.
    _unacked_keys: tuple[str, str] | None = None

    def _keys(self) -> tuple[str, str]:
        if self._unacked_keys is None:
            prefix = getattr(self.channel, "global_keyprefix", "") or ""
            self._unacked_keys = (prefix + self.unacked_index_key, prefix + self.unacked_key)
        return self._unacked_keys

    def _client(self) -> Any:
        """The channel's kept client (:mod:`workers.keptclient`), or one kombu lends."""
        kept = getattr(self.channel, "kept_client", None)
        if kept is not None:
            return kept()
        with self.channel.conn_or_acquire() as client:
            return client

    def append(self, message: Any, delivery_tag: Any) -> None:
        delivery = message.delivery_info
        index, unacked = self._keys()
        payload = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        self._client().execute_command("EVAL", APPEND, 2, index, unacked, time.time(), delivery_tag, payload)
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: Any) -> None:
        index, unacked = self._keys()
        self._client().execute_command("EVAL", ACK, 2, index, unacked, delivery_tag)
        virtual.QoS.ack(self, delivery_tag)
