"""Which node owns a token, remembered for a few seconds: no database read per request.

The cache is this process's. Removing a node clears it (the node's token stops
working at once in this process); another cloud process sharing the database (several
workers on PostgreSQL) forgets a removed node's token after :data:`TOKEN_CACHE_SECONDS`
at most. Keys are the tokens' SHA-256 digests (the database holds the same), never
the tokens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from dmg.cloud import keys
from dmg.cloud.service.gateways import NodeIdentity

#: How long a token -> node answer is trusted without reading the database again.
TOKEN_CACHE_SECONDS = 5.0
#: Tokens remembered at most (a flood of wrong tokens is never cached: only owners are).
MAX_TOKENS = 10_000


class TokenCache:
    def __init__(self, *, ttl: float = TOKEN_CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._nodes: dict[str, tuple[NodeIdentity, float]] = {}

    def get(self, token: str) -> NodeIdentity | None:
        """The node owning ``token`` if known and fresh, else None (ask the database)."""
        if not token:
            return None
        digest = keys.sha256(token)
        with self._lock:
            found = self._nodes.get(digest)
            if found is None:
                return None
            node, expires = found
            if self.clock() >= expires:
                del self._nodes[digest]
                return None
            return node

    def put(self, token: str, node: NodeIdentity) -> None:
        with self._lock:
            if len(self._nodes) >= MAX_TOKENS:
                self._nodes.clear()
            self._nodes[keys.sha256(token)] = (node, self.clock() + self.ttl)

    def clear(self) -> None:
        with self._lock:
            self._nodes.clear()
