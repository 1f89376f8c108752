"""When a missing heartbeat means a dead node, and when it only means the broker was away.

Node heartbeats live in Redis with a TTL of ``offline_after`` s. While the broker
is down (restart, Sentinel failover) no node can renew its key, and expiry runs on
the wall clock: a broker back after more than ``offline_after`` s holds no
heartbeat at all, and every node would look dead. :class:`BrokerWatch` makes the
dispatcher wait until the broker has been reachable for ``offline_after`` s again
before it judges a node by its missing heartbeat; live nodes have beaten by then.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class BrokerWatch:
    """Tracks the dispatcher's own view of the broker (thread-safe).

    Call :meth:`failed` on every ``BrokerError`` and :meth:`reachable` after
    every successful round trip; :meth:`settled` is True once the broker has been
    reachable for ``settle`` s without a failure (and from the start).
    """

    def __init__(self, settle: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle = settle
        self.clock = clock
        self._lock = threading.Lock()
        self._ok_since: float | None = clock() - settle
        self.outages = 0

    def failed(self) -> None:
        with self._lock:
            if self._ok_since is not None:
                self.outages += 1
                log.warning("broker unreachable; node liveness is not judged until it is back for %.1f s",
                            self.settle)
            self._ok_since = None

    def reachable(self) -> None:
        with self._lock:
            if self._ok_since is None:
                self._ok_since = self.clock()
                log.info("broker reachable again")

    def settled(self) -> bool:
        """True when a node's missing heartbeat can be trusted."""
        with self._lock:
            return self._ok_since is not None and self.clock() - self._ok_since >= self.settle
