"""What a worker process needs to run shards, built once per process from Settings.

Node and gateway come from the node's registration
(``dmg.registration.load(settings.data_dir, settings.node_name)``); the cloud URL and
node token too. Each piece is built lazily and rebuilt after a fork (prefork
children get their own Redis and HTTP connections).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import redis

from dmg import proxy as dmg_proxy
from dmg import registration as local_registration
from dmg.cloud.client import CloudClient
from dmg.proxy import proxy_path
from dmg.site.connection import RIDE_OUT
from dmg.site.connection import redis_client as broker_client
from dmg.site.identity import SiteIdentity
from dmg.site.presence import client_name
from dmg.site.state import SiteState
from settings import Settings
from settings.redisurl import display_url
from workers.run.outbox import OutboxReporter, ReportOutbox
from workers.run.reporter import HttpReporter, Reporter, ShortShardReporter

#: Seconds a Redis call may block a worker before it counts as broker trouble.
REDIS_SOCKET_TIMEOUT = 5.0


#: Seconds a heartbeat or load publication may wait on Redis: an outage must show as a
#: problem in the next heartbeat, not delay it past the offline threshold.
REDIS_FAST_TIMEOUT = 1.0


def redis_client(settings: Settings, *, fail_fast: bool = False,
                 registration: local_registration.NodeRegistration | None = None,
                 keep_connection: bool = False) -> redis.Redis:
    """A client of the site broker (:func:`dmg.site.connection.redis_client`). ``fail_fast``:
    short timeouts and no retries, for periodic publishers that must never stall;
    otherwise a call rides out a broker restart or Sentinel failover of up to
    :data:`~dmg.site.connection.RIDE_OUT` s instead of failing the shard in hand. With the
    node's ``registration`` its connections carry the node's name
    (:func:`dmg.site.presence.client_name`): the dispatcher sees the node alive.
    ``keep_connection`` (not with ``fail_fast``): one kept connection for every command
    (:class:`dmg.site.connection.KeepsOneConnection`)."""
    name = client_name(registration.gateway, registration.node) if registration is not None else ""
    if fail_fast:
        return broker_client(settings, timeout=REDIS_FAST_TIMEOUT, client_name=name)
    return broker_client(settings, timeout=REDIS_SOCKET_TIMEOUT, retry_for=RIDE_OUT,
                         health_check_interval=30, client_name=name, keep_connection=keep_connection)


@dataclass
class NodeContext:
    settings: Settings
    registration: local_registration.NodeRegistration
    state: SiteState
    reporter: Reporter
    pid: int = field(default_factory=os.getpid)

    @property
    def node(self) -> str:
        return self.registration.node

    @classmethod
    def build(cls, settings: Settings) -> NodeContext:
        """Raises NotFound/BadInput (dmg.errors) when the node is not registered here."""
        registration = local_registration.load(settings.data_dir, settings.node_name)
        # The worker's store and cloud clients use the gateway's proxy the agent applied.
        dmg_proxy.use(proxy_path(local_registration.node_dir(settings.data_dir, registration.node)))
        # A pool process runs one shard at a time and never blocks on Redis: one kept
        # connection, no pool checkout per command.
        state = SiteState(redis_client(settings, registration=registration, keep_connection=True),
                          registration.gateway,
                          identity=SiteIdentity.of(registration), where=display_url(settings.redis_url))
        client = CloudClient(registration.cloud_url, token=registration.token, ca=settings.cloud_ca)
        # Queued for the node agent's sender (batches, off the worker's path); a shard that
        # ends within SHORT_SHARD s sends only its final report.
        outbox = ReportOutbox(state, registration.node)
        reporter = ShortShardReporter(OutboxReporter(HttpReporter(client), outbox, queue_first=True))
        return cls(settings, registration, state, reporter)


_lock = threading.Lock()
_current: NodeContext | None = None


def node_context(settings: Settings) -> NodeContext:
    """This process's context (built on first use, again after a fork)."""
    global _current
    with _lock:
        if _current is None or _current.pid != os.getpid():
            _current = NodeContext.build(settings)
        return _current
