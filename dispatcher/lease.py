"""The dispatcher lease: one holder per gateway, fenced by an epoch.

- :meth:`Lease.acquire`: ``SET key <holder>:<random token> NX PX ttl`` and, in the
  same Redis script, ``INCR epoch``: every acquisition gets a higher epoch than any
  before it. The cloud refuses claims and plans from an older epoch.
- :meth:`Lease.renew` / :meth:`Lease.release` act only while the key still holds
  our token (compare-and-set in Lua): a holder whose lease expired and was taken
  cannot renew or delete the new holder's lease.
- With ``identity_key``/``identity_token`` the lease is taken only in a namespace
  whose identity stamp is ours or absent (:mod:`dmg.site.identity`): a dispatcher
  never leads another gateway's site.
- :meth:`Lease.break_dead`: a candidate that sees the holder's node gone (no live
  connection to Redis, :mod:`dmg.site.presence`) deletes the lease, only if it still holds
  the very value it judged (compare-and-delete in Lua), and may then take it at once
  instead of waiting for the TTL. The holder's own renewals fail from then on.
- :meth:`Lease.holding` is local and pessimistic: true only until
  ``acquired/renewed + ttl * (1 - safety)`` by this process's monotonic clock. A
  holder that failed to renew in time must consider itself not holding; check it
  before every placement.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable

import redis

from dmg.errors import BrokerError

log = logging.getLogger(__name__)

# KEYS: lease, epoch, identity. ARGV: value, ttl ms, identity token ('' = unchecked).
# -> the new epoch, 0 when taken, -1 when the namespace is another gateway's.
_ACQUIRE = """
if ARGV[3] ~= '' then
  local token = redis.call('HGET', KEYS[3], 'token')
  if token and token ~= ARGV[3] then
    return -1
  end
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
"""

# KEYS: lease. ARGV: value, ttl ms. -> 1 renewed, 0 not ours.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lease. ARGV: value. -> 1 released, 0 not ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


# KEYS: lease. ARGV: the dead holder's value. -> 1 deleted, 0 someone else holds it now.
_BREAK = _RELEASE


class Lease:
    """A renewable, fenced Redis lease held by ``holder`` (a node name).

    ``safety`` is the share of the TTL a holder gives up to clock drift and Redis
    round trips: it stops trusting its lease that much before Redis expires it.
    """

    def __init__(self, client: redis.Redis, *, key: str, epoch_key: str, holder: str, ttl: float,
                 safety: float = 0.2, clock: Callable[[], float] = time.monotonic,
                 identity_key: str = "", identity_token: str = "") -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.redis = client
        self.key = key
        self.epoch_key = epoch_key
        self.holder = holder
        self.ttl = ttl
        self.safety = safety
        self.clock = clock
        self.identity_key = identity_key
        self.identity_token = identity_token
        self.foreign = False
        self.epoch = 0
        self._value = ""
        self._valid_until = 0.0
        self._lock = threading.Lock()
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._break = client.register_script(_BREAK)

    @property
    def ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    def _deadline(self, started: float) -> float:
        return started + self.ttl * (1 - self.safety)

    def acquire(self) -> bool:
        """Try once to take the lease; True (and a new :attr:`epoch`) if taken."""
        value = f"{self.holder}:{secrets.token_hex(16)}"
        started = self.clock()
        epoch = int(self._acquire(keys=[self.key, self.epoch_key, self.identity_key or self.key],
                                  args=[value, self.ttl_ms, self.identity_token]))
        if epoch < 0:
            if not self.foreign:
                log.error("not taking the dispatcher lease: this Redis belongs to another gateway "
                          "holder=%s", self.holder)
            self.foreign = True
            return False
        self.foreign = False
        if not epoch:
            return False
        with self._lock:
            self._value = value
            self.epoch = epoch
            self._valid_until = self._deadline(started)
        return True

    def renew(self) -> bool:
        """Extend our lease by the TTL; False (and no longer holding) if it is not ours."""
        with self._lock:
            value = self._value
        if not value:
            return False
        started = self.clock()
        try:
            ok = bool(self._renew(keys=[self.key], args=[value, self.ttl_ms]))
        except BrokerError:
            ok = False
        with self._lock:
            if self._value != value:
                return False
            if ok:
                self._valid_until = self._deadline(started)
            else:
                self._value = ""
                self._valid_until = 0.0
        return ok

    def release(self) -> bool:
        """Give the lease up if it is still ours; True if it was."""
        with self._lock:
            value, self._value, self._valid_until = self._value, "", 0.0
        if not value:
            return False
        try:
            return bool(self._release(keys=[self.key], args=[value]))
        except BrokerError:
            return False

    def holding(self) -> bool:
        """True while our lease is surely still valid (local, no Redis round trip)."""
        with self._lock:
            return bool(self._value) and self.clock() < self._valid_until

    def current_value(self) -> str | None:
        """The lease's value in Redis (``<holder>:<token>``), or None when nobody holds it."""
        raw = self.redis.get(self.key)
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def current_holder(self) -> str | None:
        """The node that holds the lease now according to Redis, or None."""
        value = self.current_value()
        return holder_of(value) if value is not None else None

    def break_dead(self, value: str) -> bool:
        """Delete the lease if it still holds ``value`` (a holder known dead); True if
        deleted. Never breaks our own lease."""
        if holder_of(value) == self.holder:
            return False
        return bool(self._break(keys=[self.key], args=[value]))


def holder_of(value: str) -> str:
    """The node named by a lease value ``<holder>:<token>``."""
    return value.rsplit(":", 1)[0]
