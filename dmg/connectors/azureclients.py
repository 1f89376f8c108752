"""Azure Blob service clients shared by every Azure store of a process, like the S3 ones
(:mod:`dmg.connectors.s3clients`): one per account URL or connection string, client
options and credential.

A ``BlobServiceClient`` builds its pipeline (policies, an HTTP session and its
connection pool) when made; made per shard, every shard paid for that and opened new
connections. Clients are thread-safe; one lock guards creation. A forked child
(Celery's prefork pool) starts with an empty cache, so no two processes share a
connection pool. At most :data:`MAX_CLIENTS` are kept, the least recently used dropped
(and closed) first. The cache key holds a SHA-256 digest of the credential, never
the credential itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

MAX_CLIENTS = 32


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clients: OrderedDict[str, Any] = OrderedDict()


_cache = _Cache()


def _forget_after_fork() -> None:
    global _cache
    _cache = _Cache()


os.register_at_fork(after_in_child=_forget_after_fork)


def cache_key(where: str, credential: Mapping[str, Any], client_args: Mapping[str, Any]) -> str:
    """A digest of what makes two stores' clients interchangeable (secrets only hashed)."""
    text = json.dumps({"where": where, "credential": dict(credential), "args": dict(client_args)},
                      sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def service_client(key: str, make: Callable[[], Any]) -> Any:
    """The process's client for ``key`` (:func:`cache_key`), made by ``make()`` on first use."""
    cache = _cache
    with cache.lock:
        client = cache.clients.get(key)
        if client is not None:
            cache.clients.move_to_end(key)
            return client
        client = make()
        cache.clients[key] = client
        while len(cache.clients) > MAX_CLIENTS:
            _key, dropped = cache.clients.popitem(last=False)
            with contextlib.suppress(Exception):  # a client still in use reconnects on its next call
                dropped.close()
        return client


def clear() -> None:
    """Close and forget every cached client (tests)."""
    cache = _cache
    with cache.lock:
        for client in cache.clients.values():
            with contextlib.suppress(Exception):
                client.close()
        cache.clients.clear()
