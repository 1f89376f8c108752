"""What the site's nodes share through Redis: heartbeats, worker load, shards.

Every key is named in :mod:`dmg.site.keys`; shard records are :mod:`dmg.site.shards`.

Gateways share one Redis database safely when their names differ: nothing of one
is under the other's prefix (remote control such as ``dmg scale`` and Flower reach
only the workers of their own gateway). Two gateways with one name in one
database would mix; the ``identity`` stamp makes the second refuse to run.

A shard's ``attempt`` only grows. A worker may commit only while its attempt is
the current one; a newer attempt fences every older one (:mod:`dmg.site.fencing`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis

from dmg.site import scripts
from dmg.site.attempts import FOREIGN, RunStart, StartCall, begin_run, start_call
from dmg.site.credentials import CredentialCopies
from dmg.site.identity import ForeignRedis, SiteIdentity
from dmg.site.keys import SiteKeys
from dmg.site.shards import ShardRecords

#: The drain flag of a node removed from its gateway (``set_drain(node, DRAIN_REMOVED)``).
DRAIN_REMOVED = "removed"
#: The drain flag of a node upgrading (workers.agent.upgrade); its next process clears it.
DRAIN_UPGRADE = "upgrade"


class SiteState(ShardRecords):
    """The site state of ``gateway``. With ``identity`` (what a node runs with) every
    heartbeat checks the namespace's stamp first (:mod:`dmg.site.identity`); ``where``
    names the Redis in messages (no password)."""

    def __init__(self, client: redis.Redis, gateway: str, *, identity: SiteIdentity | None = None,
                 where: str = "") -> None:
        super().__init__(client, SiteKeys(gateway))
        self.gateway = gateway
        self.identity = identity
        self.where = where or "the site's Redis"
        self._claim_identity = client.register_script(scripts.CLAIM_IDENTITY)
        self._checked_heartbeat = client.register_script(scripts.CHECKED_HEARTBEAT)
        #: The per-node sealed credential copies (:mod:`dmg.site.credentials`).
        self.credentials = CredentialCopies(self.redis, self.keys)

    # -- identity --------------------------------------------------------------------
    def claim_identity(self) -> None:
        """Stamp the namespace with :attr:`identity` if it has no stamp; raises
        :class:`~dmg.site.identity.ForeignRedis` when another gateway's is there (and
        :class:`~dmg.errors.BrokerError` when Redis cannot be reached). Without an identity: nothing."""
        if self.identity is None:
            return
        self._raise_if_foreign(self._claim_identity(
            keys=[self.keys.identity], args=[self.identity.token, self.identity.to_json()]))

    def begin_run(self, shard_id: str, attempt: int, node: str, *, runner: str,
                  alive: Callable[[str], bool], epoch: int | None = None,
                  activity_run_id: str = "", carried: bool = False, answered: Any = None) -> RunStart:
        """Start a delivery of ``attempt`` (:func:`dmg.site.attempts.begin_run`) after the
        identity check of :meth:`claim_identity`, in the same round trip; raises
        :class:`~dmg.site.identity.ForeignRedis` (nothing written) and BrokerError. With
        ``activity_run_id``, whether that run is cancelled comes in the same round trip
        (:attr:`~dmg.site.attempts.RunStart.cancelled`), and that run's bandwidth limit,
        kept for :meth:`bandwidth_at_start`. ``carried``: a packed message's delivery
        (:func:`dmg.site.attempts.begin_run`). ``answered``: the first look's answer, taken
        already in the round trip that ended the shard before (:meth:`start_call`)."""
        identity = self._identity_args()
        begun = begin_run(self, shard_id, attempt, node, runner=runner, alive=alive, epoch=epoch,
                          identity=identity,
                          cancel_key=self.keys.cancelled(activity_run_id) if activity_run_id else "",
                          bandwidth_key=self.keys.bandwidth(activity_run_id) if activity_run_id else "",
                          carried=carried, answered=answered)
        if begun.outcome == FOREIGN:
            self._raise_if_foreign(begun.owner)
        if begun.bandwidth is not None:
            self._start_bandwidth = (activity_run_id, begun.bandwidth, time.monotonic())
        return begun

    def start_call(self, shard_id: str, attempt: int, node: str, *, runner: str, epoch: int | None = None,
                   activity_run_id: str = "", carried: bool = False) -> StartCall:
        """The first look of :meth:`begin_run` with the same arguments, to be taken in another
        round trip (:func:`dmg.site.attempts.finish_run`'s ``then_start``); its answer goes
        to :meth:`begin_run` as ``answered``."""
        return start_call(self, shard_id, attempt, node, runner=runner, epoch=epoch,
                          identity=self._identity_args(),
                          cancel_key=self.keys.cancelled(activity_run_id) if activity_run_id else "",
                          bandwidth_key=self.keys.bandwidth(activity_run_id) if activity_run_id else "",
                          carried=carried)

    def _identity_args(self) -> tuple[str, str]:
        return (self.identity.token, self.identity.to_json()) if self.identity else ("", "")

    #: The bandwidth limit the last :meth:`begin_run` read: (activity run, raw value, when).
    _start_bandwidth: tuple[str, str, float] | None = None

    def bandwidth_at_start(self, activity_run_id: str, *, within: float) -> tuple[bool, int | None]:
        """``(True, limit)`` once, when the last start of this process read ``activity_run_id``'s
        limit (:meth:`bandwidth`'s answer: None when none is set) less than ``within`` s ago;
        ``(False, None)`` otherwise (the caller reads it)."""
        seen, self._start_bandwidth = self._start_bandwidth, None
        if seen is None or seen[0] != activity_run_id or time.monotonic() - seen[2] >= within:
            return False, None
        return True, int(seen[1]) if seen[1] else None

    def _raise_if_foreign(self, owner: Any) -> None:
        if owner and self.identity is not None:
            raise ForeignRedis(where=self.where, owner=SiteIdentity.from_json(owner), mine=self.identity,
                               key=self.keys.identity)

    # -- nodes -----------------------------------------------------------------------
    def publish_heartbeat(self, node: str, beat: dict[str, Any], *, ttl: float) -> None:
        """Publish ``node``'s heartbeat (expires after ``ttl`` s). With an identity, nothing
        is written to another gateway's namespace: raises ForeignRedis instead."""
        if self.identity is not None:
            self._raise_if_foreign(self._checked_heartbeat(
                keys=[self.keys.identity, self.keys.heartbeat(node), self.keys.nodes],
                args=[self.identity.token, self.identity.to_json(), json.dumps(beat),
                      int(ttl * 1000), node]))
            return
        pipe = self.redis.pipeline()
        pipe.set(self.keys.heartbeat(node), json.dumps(beat), px=int(ttl * 1000))
        pipe.sadd(self.keys.nodes, node)
        pipe.execute()

    def heartbeats(self) -> dict[str, dict[str, Any]]:
        """Live heartbeats by node name (nodes whose key expired are absent)."""
        names = sorted(n.decode() if isinstance(n, bytes) else n
                       for n in self.redis.smembers(self.keys.nodes))
        if not names:
            return {}
        raw = self.redis.mget([self.keys.heartbeat(n) for n in names])
        return {n: json.loads(v) for n, v in zip(names, raw, strict=True) if v}

    def end_heartbeat(self, node: str) -> bool:
        """Expire ``node``'s heartbeat now (its process is gone, :mod:`dmg.site.presence`), unless
        it beat again meanwhile; True if it was removed. The node is offline from then on
        for everyone who reads heartbeats, until it beats again."""
        key = self.keys.heartbeat(node)
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call, unused-ignore]  # untyped in redis-py 8.1
                if pipe.get(key) is None:
                    return False
                pipe.multi()
                pipe.delete(key)
                pipe.execute()
                return True
            except redis.WatchError:  # it beat between our read and delete: it lives
                return False

    def forget_node(self, node: str) -> None:
        self.redis.srem(self.keys.nodes, node)
        self.redis.delete(self.keys.heartbeat(node), self.keys.load(node))

    def publish_worker_load(self, node: str, *, running: int, limit: int,
                            pids: list[int], ttl: float) -> None:
        body = {"running": running, "limit": limit, "pids": pids, "ts": time.time()}
        self.redis.set(self.keys.load(node), json.dumps(body), px=int(ttl * 1000))

    def forget_worker_load(self, node: str) -> None:
        """Drop ``node``'s published load: its worker is gone, a new one publishes its own."""
        self.redis.delete(self.keys.load(node))

    def worker_load(self, node: str) -> dict[str, Any] | None:
        raw = self.redis.get(self.keys.load(node))
        return json.loads(raw) if raw else None

    def count_moved(self, node: str, *, read: int, written: int) -> None:
        """Add bytes ``node``'s copies read and wrote (every worker process of the node adds
        to one hash, so the node's total survives its pool's processes)."""
        if read <= 0 and written <= 0:
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.keys.moved(node), "in", max(0, int(read)))
        pipe.hincrby(self.keys.moved(node), "out", max(0, int(written)))
        pipe.execute()

    def moved(self, node: str) -> tuple[int, int]:
        """``(bytes in, bytes out)`` ``node``'s copies read and wrote (0, 0 before any)."""
        raw = self.redis.hgetall(self.keys.moved(node))
        got = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
        return got.get("in", 0), got.get("out", 0)

    def set_limit(self, node: str, limit: int) -> None:
        self.redis.set(self.keys.limit(node), int(limit))

    def limit(self, node: str) -> int | None:
        raw = self.redis.get(self.keys.limit(node))
        return int(raw) if raw is not None else None

    # -- drain -------------------------------------------------------------------------
    def set_drain(self, node: str, reason: str = "drain") -> None:
        """Place nothing new on ``node`` (``reason``: ``drain`` or ``removed``)."""
        self.redis.hset(self.keys.drain, node, reason)
        self.notify_dispatcher()

    def clear_drain(self, node: str) -> bool:
        """Let ``node`` take work again; True if it was drained."""
        cleared = bool(self.redis.hdel(self.keys.drain, node))
        self.notify_dispatcher()
        return cleared

    def drained(self) -> dict[str, str]:
        """Drained nodes and why (``drain`` or ``removed``)."""
        raw = self.redis.hgetall(self.keys.drain)
        return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in raw.items()}

    # -- dispatcher backlog -------------------------------------------------------------
    def push_pending(self, *shard_ids: str) -> None:
        if shard_ids:
            self.redis.rpush(self.keys.pending, *shard_ids)
            self.notify_dispatcher()

    def wait_for_change(self, timeout: float) -> bool:
        """Block up to ``timeout`` s until :meth:`notify_dispatcher`; True when woken."""
        if timeout <= 0:
            return False
        # The list holds one entry at most (notify_dispatcher trims it): the pop empties it.
        return self.redis.blpop([self.keys.wake], timeout=timeout) is not None

    def pending(self) -> list[str]:
        return [m.decode() if isinstance(m, bytes) else m
                for m in self.redis.lrange(self.keys.pending, 0, -1)]

    def drop_pending(self, shard_id: str) -> None:
        self.redis.lrem(self.keys.pending, 1, shard_id)

    def begin_planning(self, activity_run_id: str) -> None:
        """Note that an activity run is being planned, until :meth:`end_planning`: a new
        dispatcher replays the plans of the runs still listed (its predecessor died)."""
        self.redis.sadd(self.keys.planning, activity_run_id)

    def end_planning(self, activity_run_id: str) -> None:
        self.redis.srem(self.keys.planning, activity_run_id)

    def planning(self) -> set[str]:
        return {m.decode() if isinstance(m, bytes) else m
                for m in self.redis.smembers(self.keys.planning)}

    # -- bandwidth -------------------------------------------------------------------------
    def set_bandwidth(self, activity_run_id: str, bytes_per_s: int, *, ttl: float = 7 * 24 * 3600) -> None:
        """Set an activity run's bandwidth limit (0: none); running shards apply it within ~1 s."""
        self.redis.set(self.keys.bandwidth(activity_run_id), int(bytes_per_s), px=int(ttl * 1000))

    def bandwidth(self, activity_run_id: str) -> int | None:
        """The limit set with :meth:`set_bandwidth`; None when none was (the activity's option applies)."""
        raw = self.redis.get(self.keys.bandwidth(activity_run_id))
        return int(raw) if raw is not None else None

    # -- cancellation ----------------------------------------------------------------------
    def cancel(self, activity_run_id: str, *, ttl: float = 7 * 24 * 3600) -> list[str]:
        """Flag an activity run cancelled (idempotent) and drop its pending shards; -> the
        shard ids dropped. Workers check the flag as they check fencing: a shard of a
        cancelled run does not start, and a running one stops (:meth:`is_cancelled`)."""
        self.redis.set(self.keys.cancelled(activity_run_id), 1, px=int(ttl * 1000))
        mine = [s for s in self.pending() if s.startswith(f"{activity_run_id}-")]
        for shard_id in mine:
            self.drop_pending(shard_id)
        return mine

    def is_cancelled(self, activity_run_id: str) -> bool:
        return bool(activity_run_id) and bool(self.redis.exists(self.keys.cancelled(activity_run_id)))
