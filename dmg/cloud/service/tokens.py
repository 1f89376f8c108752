"""Which node owns a token, remembered for a few seconds: no database read per request.

The cache is this process's. Removing a node clears it (the node's token stops
working at once in this process). A ``shared`` cache (PostgreSQL, where several cloud
processes may share the database: ``--workers N`` or several machines) caches nothing:
every node request reads its token's node (one indexed SELECT). A NOTIFY from the
remover (:mod:`dmg.cloud.api.listen`) clearing the other processes' caches was tried:
under a load of 20 on two cores a request to the other worker right after the removal's
answer was still served from the cache once in a hundred (the notice is handled on
the same event loop, after it), so "refused at once" needs the database read.
:data:`TOKEN_CACHE_SECONDS` bounds an entry's life on SQLite. Keys are the tokens'
SHA-256 digests (the database holds the same), never the tokens.
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
    def __init__(self, *, ttl: float = TOKEN_CACHE_SECONDS, shared: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._nodes: dict[str, tuple[NodeIdentity, float]] = {}
        #: False while a shared cache hears no revocations: nothing is cached then.
        self._usable = not shared
        #: Bumped by every clear: an answer read from the database before a clear is
        #: not cached after it (it may name a node removed meanwhile).
        self._generation = 0

    @property
    def generation(self) -> int:
        """Take it before reading the database; give it back to :meth:`put`."""
        return self._generation

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

    def put(self, token: str, node: NodeIdentity, *, generation: int | None = None) -> None:
        """Remember ``node`` for ``token``, unless the cache was cleared since
        ``generation`` was taken (or it is a shared cache that hears nothing now)."""
        with self._lock:
            if not self._usable or (generation is not None and generation != self._generation):
                return
            if len(self._nodes) >= MAX_TOKENS:
                self._nodes.clear()
            self._nodes[keys.sha256(token)] = (node, self.clock() + self.ttl)

    def clear(self) -> None:
        with self._lock:
            self._nodes.clear()
            self._generation += 1

    def listening(self, on: bool) -> None:
        """Forget what was cached; ``on``: cache from now on (a process that alone serves
        its database), else cache nothing."""
        with self._lock:
            self._nodes.clear()
            self._generation += 1
            self._usable = on
