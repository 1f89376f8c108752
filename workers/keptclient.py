"""kombu's Redis transport with one Redis client object per channel, not one per call.

Works around kombu 5.7.0 (``kombu.transport.redis``; checked with redis-py 8.1.0):
``Channel.conn_or_acquire()`` builds a new ``redis.Redis`` object (``_create_client``)
for every call that is not handed a client: each ack, each unacked-bookkeeping step and
each publish. The object is cheap in sockets (it borrows from the channel's connection
pool) but not in CPU: redis-py's ``Redis.__init__`` copies its response callbacks and
options every time, 16-18 % of a node worker's main process by a GIL profile at load.
kombu's own ``Channel.client`` (a cached property) keeps one, but it is bound to the
*asynchronous* pool that the event loop polls for ``BRPOP``, so the synchronous calls
cannot use it.

:class:`KeptClientChannel` keeps one synchronous client per channel and builds it again
when kombu replaced the channel's pool (``_disconnect_pools`` after a lost connection):
the client always talks through the pool kombu would have used, so a broker restart or a
Sentinel failover is handled as before (connections are made again on the next call).
:class:`Transport` (``redis://``, ``rediss://``) and :class:`SentinelTransport`
(``sentinel://``) are kombu's with that channel; :func:`transport_for` names the one for
a broker URL, for Celery's ``broker_transport`` (:func:`workers.app.make_app`). Remove
once kombu reuses its client.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

from workers.unacked import OneCallQoS

#: Celery ``broker_transport`` values (import paths) of the transports below.
TRANSPORT = "workers.keptclient:Transport"
SENTINEL_TRANSPORT = "workers.keptclient:SentinelTransport"


class KeptClient:
    """Mixin for a kombu Redis channel: :meth:`conn_or_acquire` yields one kept client."""

    #: (the pool the client was built on, the client); None until the first call.
    _kept: tuple[Any, Any] | None = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
        else:
            yield self.kept_client()

    def kept_client(self) -> Any:
        """The channel's synchronous client, built again when kombu replaced its pool."""
        pool = self.pool  # type: ignore[attr-defined]  # kombu's Channel.pool
        kept = self._kept
        if kept is None or kept[0] is not pool:
            kept = self._kept = (pool, self._create_client())  # type: ignore[attr-defined]
        return kept[1]


class KeptClientChannel(KeptClient, kombu_redis.Channel):
    """kombu's Redis channel, one synchronous client kept (see the module docstring), its
    acks-late bookkeeping one script call a step (:mod:`workers.unacked`)."""

    QoS = OneCallQoS


class KeptClientSentinelChannel(KeptClient, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel, one synchronous client kept (see the module docstring), its
    acks-late bookkeeping one script call a step (:mod:`workers.unacked`)."""

    QoS = OneCallQoS


class Transport(kombu_redis.Transport):
    Channel = KeptClientChannel


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = KeptClientSentinelChannel


def transport_for(broker_url: str) -> str | None:
    """The ``broker_transport`` for ``broker_url``: ours for ``redis://``, ``rediss://`` and
    ``sentinel://``; None (kombu picks by scheme) for anything else."""
    scheme = broker_url.partition("://")[0].lower()
    if scheme in ("redis", "rediss"):
        return TRANSPORT
    if scheme == "sentinel":
        return SENTINEL_TRANSPORT
    return None


def keep_transport_on_switch(connection: Any) -> None:
    """Keep our transport on ``connection`` when kombu switches it to its next URL (a
    ``sentinel://a;sentinel://b`` list): kombu 5.7.0's ``Connection.switch`` sets the
    transport from the new URL's scheme, which would bring back kombu's own. Idempotent."""
    switch = connection.switch
    if getattr(switch, "keeps_transport", False):
        return

    def switch_keeping_transport(conn_str: str) -> Any:
        ours = connection.transport_cls
        answer = switch(conn_str)
        if ours in (TRANSPORT, SENTINEL_TRANSPORT, Transport, SentinelTransport):
            connection.transport_cls = ours
        return answer

    switch_keeping_transport.keeps_transport = True  # type: ignore[attr-defined]
    connection.switch = switch_keeping_transport
