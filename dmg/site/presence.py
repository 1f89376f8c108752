"""Which node processes are connected to the site broker: fast death detection.

Every Redis connection a node's processes open carries a name
(``CLIENT SETNAME``, :func:`client_name`): ``dmg:<gateway>:<node>``. The node
process (agent, dispatcher candidate), its Celery worker (kombu's broker
connections, the result backend) and its pool processes all use it, so while any
of them lives the node shows in ``CLIENT LIST``. A process that dies, SIGKILL
included, has its sockets closed by the kernel at once, and Redis drops its
connections: a node whose connections all vanished died, well before its
heartbeat expires. A machine that vanishes without a word (power loss, a
partition, SIGSTOP) keeps its sockets open on the Redis side: only the heartbeat
timeout notices it.

:class:`PresenceWatch` answers "which nodes are gone": a node is gone when

- it was seen connected by an earlier look (a node that never names its
  connections, an older dmg, is never judged), and
- it had no named connection on two looks at least ``confirm`` s apart (a process
  that is just reconnecting comes back within that), and
- the Redis server has not just (re)started: after a restart or a Sentinel failover
  (``run_id`` changes, or ``uptime_in_seconds`` is below ``grace``) every client is
  briefly absent, so nobody is judged until ``grace`` s have passed.

A Redis that refuses ``CLIENT LIST`` (an ACL without it) makes every answer empty:
the heartbeat timeout alone decides then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from dmg.errors import BrokerRefused

log = logging.getLogger(__name__)

#: Seconds a node must stay without a connection (over two looks) before it is gone.
CONFIRM = 1.0


def client_prefix(gateway: str) -> str:
    return f"dmg:{gateway}:"


def client_name(gateway: str, node: str) -> str:
    """The connection name of every Redis connection of ``node`` of ``gateway``."""
    return client_prefix(gateway) + node


def connected_nodes(client: redis.Redis, gateway: str) -> set[str]:
    """The nodes of ``gateway`` with at least one live named connection now."""
    prefix = client_prefix(gateway)
    found: set[str] = set()
    for entry in client.client_list():
        name = str(entry.get("name") or "")
        if name.startswith(prefix) and len(name) > len(prefix):
            found.add(name[len(prefix):])
    return found


class PresenceWatch:
    """Tracks named connections across looks; see the module docstring. Not thread-safe:
    one dispatcher candidate owns one."""

    def __init__(self, gateway: str, *, grace: float, confirm: float = CONFIRM,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.gateway = gateway
        self.grace = grace
        self.confirm = confirm
        self.clock = clock
        self.run_id = ""
        self.restarts = 0  # run_id changes seen after the first look: restarts and failovers
        self._server_since = 0.0  # our clock when this Redis run was first seen, minus its uptime
        self._seen: set[str] = set()  # connected at some look
        self._absent_since: dict[str, float] = {}
        self._refused = False

    def look(self, client: redis.Redis) -> set[str]:
        """One look at the broker; returns the nodes gone (see the module docstring).

        Raises :class:`~dmg.errors.BrokerError` when the broker cannot be reached (nothing
        is judged by that look; a plain redis-py client raises its own errors)."""
        try:
            server = client.info("server")
            connected = connected_nodes(client, self.gateway)
        except (BrokerRefused, redis.ResponseError) as exc:  # CLIENT LIST or INFO refused (ACL)
            if not self._refused:
                log.warning("cannot list the broker's clients, dead nodes are noticed by their "
                            "heartbeat only: %s", exc)
            self._refused = True
            return set()
        now = self.clock()
        run_id = str(server.get("run_id", ""))
        if run_id != self.run_id:
            if self.run_id:
                self.restarts += 1
                log.info("the broker restarted or failed over (run_id %s -> %s); judging nobody for "
                         "%.1f s", self.run_id[:8], run_id[:8], self.grace)
            self.run_id = run_id
            self._server_since = now - float(server.get("uptime_in_seconds", 0) or 0)
            self._absent_since.clear()
        self._seen |= connected
        if now - self._server_since < self.grace:
            self._absent_since.clear()
            return set()
        absent = self._seen - connected
        self._absent_since = {n: self._absent_since.get(n, now) for n in absent}
        return {n for n, since in self._absent_since.items() if now - since >= self.confirm}
