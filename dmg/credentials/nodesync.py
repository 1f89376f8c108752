"""A node keeps the credentials the dispatcher sealed to it: :class:`NodeCredentials`.

Each round (``sync_once``, every few seconds on the node):

1. the gateway key the dispatcher handed this node (``gwkey:<node>`` in the site's
   Redis) is kept in the node's vault, so this node can become dispatcher;
2. each credential copy sealed to this node (``creds:<node>``) whose version differs
   from the one kept is opened once (to check it is this node's and that store's), then
   kept sealed in the vault; a copy the gateway no longer has is dropped;
3. the gateway's current versions are read from the cloud, to tell which credentials
   this node lacks the current version of (:meth:`heartbeat_fields`:
   ``credentials_stale``; placement gives this node no shard whose stores take one of
   them) and, in the heartbeat, the versions held (the cloud derives
   "out of sync: has v3 of 'lake', gateway has v4" and Limited from them).

A round that cannot reach Redis or the cloud keeps what it had and tries again at the
next: a node that missed a sync catches up by itself.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from dmg.cloud.client import CloudClient
from dmg.credentials import cloudcalls
from dmg.credentials.vault import NodeVault
from dmg.credstatus import stale_stores
from dmg.errors import BrokerError, DmgError
from dmg.site.credentials import CredentialCopies

log = logging.getLogger(__name__)


class NodeCredentials:
    """One node's side of credential sync (see the module docstring)."""

    def __init__(self, *, node: str, vault: NodeVault, copies: CredentialCopies, cloud: CloudClient) -> None:
        self.node = node
        self.vault = vault
        self.copies = copies
        self.cloud = cloud
        self.public_key = vault.public_key()
        self._lock = threading.Lock()
        self._current: dict[str, int] | None = None  # the gateway's versions (None: not known yet)
        self._sync_seen: int | None = None
        self._failed: dict[str, str] = {}  # store -> why its copy could not be kept (logged once)

    def sync_once(self) -> dict[str, int]:
        """One round; returns the versions held after it."""
        force = False
        try:
            answer = cloudcalls.node_versions(self.cloud)
            current = {str(k): int(v) for k, v in dict(answer.get("credentials") or {}).items()}
            sync = int(answer.get("sync") or 0)
            force = self._sync_seen is not None and sync != self._sync_seen
            with self._lock:
                self._current, self._sync_seen = current, sync
        except DmgError as exc:
            log.debug("credential versions not read from the cloud node=%s error=%s", self.node, exc)
        try:
            self._take_gateway_key()
            self._take_copies(force=force)
        except BrokerError as exc:
            log.warning("credential copies not read node=%s error=%s", self.node, exc)
        return self.vault.held()

    def _take_gateway_key(self) -> None:
        handed = self.copies.gateway_key(self.node)
        if handed is None or handed[0] == self.vault.gateway_public_key():
            return
        try:
            self.vault.put_gateway_key(*handed)
            log.info("gateway key received node=%s", self.node)
        except DmgError as exc:
            log.warning("gateway key not kept node=%s error=%s", self.node, exc)

    def _take_copies(self, *, force: bool) -> None:
        copies = self.copies.copies(self.node)
        held = self.vault.held()
        for store, copy in sorted(copies.items()):
            if copy.to and copy.to != self.public_key:
                continue  # sealed to this node's former key: the dispatcher seals it again
            if held.get(store) == copy.version and not force:
                continue
            try:
                self.vault.put_credential(store, copy.version, copy.sealed)
            except (DmgError, OSError) as exc:
                if self._failed.get(store) != str(exc):
                    log.warning("credential not kept node=%s store=%s version=%d error=%s",
                                self.node, store, copy.version, exc)
                self._failed[store] = str(exc)
                continue
            self._failed.pop(store, None)
            log.info("credential kept node=%s store=%s version=%d", self.node, store, copy.version)
        with self._lock:
            current = self._current
        if current is None:
            return  # without the cloud's list, nothing is dropped
        for store in sorted(set(held) - set(copies) - set(current)):
            self.vault.remove_credential(store)
            log.info("credential dropped (deleted from the gateway) node=%s store=%s", self.node, store)

    def heartbeat_fields(self) -> dict[str, Any]:
        """What the heartbeat carries: the versions held, this node's public key, and the
        credentials whose current version this node lacks (placement skips it for them)."""
        held = self.vault.held()
        with self._lock:
            current = dict(self._current or {})
        return {"credentials": held, "public_key": self.public_key,
                "credentials_stale": stale_stores(held, current)}
