"""The dispatcher hands every node the gateway's credentials: :class:`CredentialSync`.

Where the keys live (README "Credentials"):

- every node has its own X25519 key pair (``node.key`` in its directory, made at
  ``dmg node register``; the public half goes to the cloud);
- the **gateway key** pair: its public half is in the cloud (a user's CLI seals new
  secrets to it); its private half exists only inside the site, sealed to each node's
  own key (``gwkey:<node>`` in Redis, ``gateway.json`` in the node's vault). The first
  dispatcher of a gateway that finds no key makes one and offers its public half to the
  cloud (the first offer wins). So any node that was handed the key may become
  dispatcher, and a failover loses nothing.

Each round, while this node holds the lease (``sync_once``): read the sealed
credentials and every node's public key from the cloud; for every node, hand over the
gateway key if it lacks it, open each credential version the node does not have with
the gateway key and seal it again to the node's key (``creds:<node>`` in Redis), and
drop the copies of deleted credentials. A round does only what is missing, so a round
cut short by a failover is finished by the next dispatcher; `dmg credentials sync`
(the cloud's ``sync`` counter) makes the next round redo everything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from nacl.public import PrivateKey

from dmg.cloud.client import CloudClient
from dmg.credentials import cloudcalls, sealing
from dmg.credentials.vault import NodeVault, credential_payload, read_payload
from dmg.errors import BrokerError, DmgError
from dmg.site.credentials import CredentialCopies, SealedCopy

log = logging.getLogger(__name__)


class CredentialSync:
    """The dispatcher's side of credential sync (see the module docstring)."""

    def __init__(self, *, node: str, vault: NodeVault, copies: CredentialCopies, cloud: CloudClient,
                 is_dispatcher: Callable[[], bool]) -> None:
        self.node = node
        self.vault = vault
        self.copies = copies
        self.cloud = cloud
        self.is_dispatcher = is_dispatcher
        self._sync_done: int | None = None
        self._complaint = ""

    def sync_once(self) -> int:
        """One round if this node is the dispatcher; returns the copies written."""
        if not self.is_dispatcher():
            return 0
        try:
            view = cloudcalls.sync_view(self.cloud)
            key = self._gateway_key(str(view.get("public_key") or ""))
            if key is None:
                return 0
            return self._hand_out(view, *key)
        except (DmgError, BrokerError) as exc:
            self._complain(f"credential sync round not done: {exc}")
            return 0

    def _complain(self, text: str) -> None:
        if text != self._complaint:
            log.warning("%s node=%s", text, self.node)
        self._complaint = text

    def _gateway_key(self, public: str) -> tuple[str, PrivateKey] | None:
        held = self.vault.gateway_key()
        if not public:
            if held is None:
                made = sealing.new_private_key()
                self.vault.keep_gateway_key(made)
                held = (sealing.public_text(made), made)
                log.info("gateway key made node=%s", self.node)
            public = cloudcalls.offer_gateway_key(self.cloud, held[0])
        if held is None or held[0] != public:
            self._complain("this dispatcher does not hold the gateway key yet (a node that holds it "
                           "hands it over when it is dispatcher)")
            return None
        return held

    def _hand_out(self, view: dict[str, Any], public: str, key: PrivateKey) -> int:
        sync = int(view.get("sync") or 0)
        force = self._sync_done is not None and sync != self._sync_done
        credentials = [c for c in view.get("credentials") or [] if c.get("sealed_to") == public]
        current = {str(c["store"]) for c in view.get("credentials") or []}
        written = 0
        opened: dict[str, dict[str, str]] = {}
        for node in view.get("nodes") or []:
            name, to = str(node.get("name") or ""), str(node.get("public_key") or "")
            if not name or not to:
                continue  # an older node that has not sent its key yet
            handed = self.copies.gateway_key(name)
            if force or handed is None or handed[0] != public:
                handover = sealing.seal(sealing.private_text(key).encode(), to)
                self.copies.put_gateway_key(name, public, handover)
                written += 1
            have = self.copies.copies(name)
            for cred in credentials:
                store, version = str(cred["store"]), int(cred["version"])
                copy = have.get(store)
                if not force and copy is not None and copy.version == version and copy.to == to:
                    continue
                if store not in opened:
                    plaintext = sealing.unseal(str(cred["sealed"]), key, what=f"the credential of {store!r}")
                    what = f"the credential of {store!r}"
                    opened[store] = read_payload(plaintext, store=store, what=what)[1]
                sealed = sealing.seal(credential_payload(store, opened[store], version=version), to)
                self.copies.put(name, store, SealedCopy(version, sealed, to))
                written += 1
                log.info("credential handed over store=%s version=%d to=%s", store, version, name)
            self.copies.remove(name, *sorted(set(have) - current))
        self._sync_done = sync
        self._complaint = ""
        return written
