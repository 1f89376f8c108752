"""Which gateway a Redis database belongs to: the identity stamp.

A gateway's keys in Redis live under ``dmg:<gateway name>:`` (:mod:`dmg.site.keys`;
Celery's under ``dmg:<gateway name>:celery:``, :func:`settings.celery.broker_key_prefix`).
Gateways with different names can therefore share one Redis database on purpose.
Two gateways with the *same* name (two clouds each have a gateway ``site``; two
``dmg up`` sites on one machine reaching the same Redis port) would share one
namespace: the same queues, heartbeats and dispatcher lease. That is the
misconfiguration this module stops.

The first node or dispatcher of a gateway to reach a Redis database stamps the
namespace with its :class:`SiteIdentity` (hash ``dmg:<gateway>:identity``, written
only when absent). The gateway is identified by the id the cloud gave it at
registration (``gateway_id``, unique across clouds), not by its name. After that:

- a node starting with another gateway's stamp there refuses to run
  (:class:`ForeignRedis`: one line saying which gateway owns that Redis);
- every heartbeat checks the stamp in the same Redis script that writes it, so a
  node whose Redis was swapped under it (another site's Redis on the same port)
  writes no heartbeat there, stops taking work and says why;
- the dispatcher lease is taken only where the stamp is ours (or absent).

A Redis that comes back empty (no persistence) is stamped again by the first node
that reaches it. A node registered before gateway ids existed (no ``gateway_id`` in
its ``node.json``) is not checked, and says so when it starts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cached_property

from dmg.errors import Conflict
from dmg.registration import NodeRegistration


@dataclass(frozen=True)
class SiteIdentity:
    """A gateway as the cloud knows it. ``gateway_id`` is empty for a node registered
    before the cloud handed out gateway ids: such a node neither stamps nor checks
    (register it again to have its Redis checked)."""

    gateway: str
    gateway_id: str
    cloud: str

    @classmethod
    def of(cls, registration: NodeRegistration) -> SiteIdentity:
        return cls(registration.gateway, registration.gateway_id, registration.cloud_url)

    @property
    def token(self) -> str:
        """What two stamps must share to be the same gateway; empty when unknown."""
        return self.gateway_id

    def to_json(self) -> str:
        """The stamp's JSON (made once: a worker sends it with every shard's start)."""
        return self._json

    @cached_property
    def _json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> SiteIdentity:
        try:
            body = json.loads(text)
            return cls(str(body["gateway"]), str(body.get("gateway_id") or ""), str(body.get("cloud") or ""))
        except (ValueError, KeyError, TypeError):
            raw = text.decode(errors="replace") if isinstance(text, bytes) else text
            return cls("?", raw, "?")

    def describe(self) -> str:
        return f"gateway {self.gateway!r} (id {self.gateway_id or 'unknown'}, cloud {self.cloud})"


class ForeignRedis(Conflict):
    """The Redis database is stamped with another gateway's identity."""

    def __init__(self, *, where: str, owner: SiteIdentity, mine: SiteIdentity, key: str) -> None:
        super().__init__(
            f"this Redis ({where}) belongs to {owner.describe()}; this node is of {mine.describe()}",
            hint="give the node its own Redis database with DMG_REDIS_URL, or give the gateways "
                 "different names to share one Redis; if that gateway no longer exists, delete the "
                 f"key {key}")
        self.owner = owner
        self.mine = mine
