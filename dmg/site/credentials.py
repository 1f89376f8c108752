"""The credential copies the dispatcher hands each node through the site's Redis.

Only ciphertext is stored here: each value is sealed to one node's public key.

- ``creds:<node>``: hash, store -> JSON ``{"version": n, "sealed": "<base64>", "to": "<node
  public key it is sealed to>"}``;
- ``gwkey:<node>``: JSON ``{"public_key": "<gateway public key>", "sealed": "<base64>"}``.

The dispatcher writes them (:mod:`dispatcher.credsync`), each node reads its own
(:mod:`dmg.credentials.nodesync`). Writing the same version again is harmless, so two
dispatchers overlapping during a failover cannot disagree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from dmg.site.keys import SiteKeys


@dataclass(frozen=True)
class SealedCopy:
    version: int
    sealed: str
    #: The public key it is sealed to (a node registered again gets a new key).
    to: str = ""


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class CredentialCopies:
    """Read and write the per-node sealed copies of one site."""

    def __init__(self, client: redis.Redis, keys: SiteKeys) -> None:
        self.redis = client
        self.keys = keys

    def copies(self, node: str) -> dict[str, SealedCopy]:
        """Every credential copy sealed to ``node``, by store (unreadable entries skipped)."""
        found: dict[str, SealedCopy] = {}
        for field, raw in self.redis.hgetall(self.keys.credential_copies(node)).items():
            try:
                body = json.loads(raw)
                found[_text(field)] = SealedCopy(int(body["version"]), str(body["sealed"]),
                                                 str(body.get("to", "")))
            except (ValueError, KeyError, TypeError):
                continue
        return found

    def versions(self, node: str) -> dict[str, int]:
        return {store: copy.version for store, copy in self.copies(node).items()}

    def put(self, node: str, store: str, copy: SealedCopy) -> None:
        self.redis.hset(self.keys.credential_copies(node), store,
                        json.dumps({"version": copy.version, "sealed": copy.sealed, "to": copy.to}))

    def remove(self, node: str, *stores: str) -> None:
        if stores:
            self.redis.hdel(self.keys.credential_copies(node), *stores)

    def gateway_key(self, node: str) -> tuple[str, str] | None:
        """(gateway public key, sealed private key) handed to ``node``, if any."""
        raw = self.redis.get(self.keys.gateway_key_copy(node))
        if not raw:
            return None
        try:
            body = json.loads(raw)
            return str(body["public_key"]), str(body["sealed"])
        except (ValueError, KeyError, TypeError):
            return None

    def put_gateway_key(self, node: str, public_key: str, sealed: str) -> None:
        self.redis.set(self.keys.gateway_key_copy(node),
                       json.dumps({"public_key": public_key, "sealed": sealed}))

    def forget_node(self, node: str) -> None:
        """Drop every copy sealed to ``node`` (a removed node)."""
        self.redis.delete(self.keys.credential_copies(node), self.keys.gateway_key_copy(node))
