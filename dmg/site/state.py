"""What the site's nodes share through Redis: heartbeats, worker load, shards.

Key layout (all under ``dmg:<gateway>:``):

==========================  ===================================================
``identity``                hash ``token``, ``json``: the gateway this namespace belongs
                            to, stamped at first start (:mod:`dmg.site.identity`)
``hb:<node>``               JSON heartbeat of a node agent, expires on its own
``load:<node>``             JSON ``{running, limit, pids, ts}`` from the worker
``nodes``                   set of node names that ever sent a heartbeat
``limit:<node>``            the node's concurrent-job limit set at runtime
``queued:<node>``           set of shard ids placed on the node, not started
``running:<node>``          set of shard ids the node is running
``started:<node>``          set of staging ids (``<shard>.<attempt>``) the node began, not ended
``shard:<id>``              hash: ``spec`` (JSON), ``attempt``, ``node``, ``state``, ``epoch``,
                            ``deliveries``, ``runner``, ``duplicates``, ``unsent``,
                            ``ended_reason``, ``ended_at`` (:mod:`dmg.site.attempts`)
``drain``                   hash: node -> ``drain`` / ``removed``: place nothing new there
``planning``                set of activity runs whose shards may not be pending yet
``pending``                 list of shard ids planned but not placed yet
``wake``                    pinged when a slot frees or work arrives (wakes placement)
``lease`` / ``epoch``       the dispatcher lease token and fencing counter
``plan:<activity run>``     JSON list of the activity run's shards (dispatcher.planner)
``outbox:<node>``           list of shard reports waiting for the cloud (workers.outbox)
``bw:<activity run>``       bandwidth limit in bytes/s set while it runs (0: none)
``bwtat:<activity run>``    its shared pacing schedule (dmg.transfer.sitebandwidth)
``cancelled:<run>``         set when a user cancelled activity run ``<run>``: no shard of
                            it starts or goes on
``celery:*``                every key and channel of Celery and kombu: queues
                            ``node.<name>``, bindings, ``unacked*``, broadcast and
                            event channels, ``celery-task-meta-*`` results
                            (``global_keyprefix``, :func:`settings.celery.broker_key_prefix`)
==========================  ===================================================

Gateways share one Redis database safely when their names differ: nothing of one
is under the other's prefix (remote control such as ``dmg scale`` and Flower reach
only the workers of their own gateway). Two gateways with one name in one
database would mix; the ``identity`` stamp makes the second refuse to run.

A shard's ``attempt`` only grows. A worker may commit only while its attempt is
the current one (:meth:`SiteState.is_current`); a newer attempt fences every
older one.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from dmg.site.identity import IDENTITY_KEY, ForeignRedis, SiteIdentity

SHARD_QUEUED = "queued"
SHARD_RUNNING = "running"
SHARD_DONE = "done"
SHARD_FAILED = "failed"
#: Why a shard of a cancelled activity run did not start or stopped (:meth:`SiteState.cancel`).
CANCELLED_REASON = "the run was cancelled"
#: The drain flag of a node removed from its gateway (``set_drain(node, DRAIN_REMOVED)``).
DRAIN_REMOVED = "removed"

# KEYS: shard hash. ARGV: prefix, shard id, node, queued state, epoch ('' = unfenced).
_NEW_ATTEMPT = """
if ARGV[5] ~= '' and redis.call('GET', ARGV[1] .. 'epoch') ~= ARGV[5] then
  return 0
end
local previous = redis.call('HGET', KEYS[1], 'node')
if previous and previous ~= '' then
  redis.call('SREM', ARGV[1] .. 'queued:' .. previous, ARGV[2])
  redis.call('SREM', ARGV[1] .. 'running:' .. previous, ARGV[2])
end
-- A requeued shard's attempt was bumped already and never sent: send that number.
local unsent = redis.call('HGET', KEYS[1], 'unsent')
local attempt
if unsent and unsent ~= '' and unsent == redis.call('HGET', KEYS[1], 'attempt') then
  attempt = tonumber(unsent)
else
  attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
end
redis.call('HDEL', KEYS[1], 'unsent', 'ended_reason', 'ended_at')
redis.call('HSET', KEYS[1], 'node', ARGV[3], 'state', ARGV[4], 'epoch', ARGV[5], 'deliveries', 0,
           'runner', '')
redis.call('SADD', ARGV[1] .. 'queued:' .. ARGV[3], ARGV[2])
return attempt
"""

# KEYS: shard hash, queued set, running set, started set.
# ARGV: attempt, shard id, node, end state, staging id.
_MARK_FINISHED = """
redis.call('SREM', KEYS[4], ARGV[5])
local current = redis.call('HGET', KEYS[1], 'attempt') == ARGV[1]
if not current and redis.call('HGET', KEYS[1], 'node') == ARGV[3] then
  return 0
end
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('SREM', KEYS[3], ARGV[2])
if current then
  redis.call('HSET', KEYS[1], 'state', ARGV[4])
end
return 1
"""


# The stamp check every identity-checked write begins with. KEYS[1]: the identity hash;
# ARGV[1], ARGV[2]: our token ('' = unknown: nothing checked nor stamped) and JSON.
# Stamps an empty namespace; the owner's JSON when the namespace is another gateway's,
# else false.
_FOREIGN = """
local function foreign()
  if ARGV[1] == '' then
    return false
  end
  local token = redis.call('HGET', KEYS[1], 'token')
  if not token then
    redis.call('HSET', KEYS[1], 'token', ARGV[1], 'json', ARGV[2])
    return false
  end
  if token ~= ARGV[1] then
    return redis.call('HGET', KEYS[1], 'json') or token
  end
  return false
end
"""

_CLAIM_IDENTITY = _FOREIGN + "return foreign()"

# KEYS: identity, heartbeat, nodes. ARGV: token, identity JSON, beat, ttl ms, node.
_CHECKED_HEARTBEAT = _FOREIGN + """
local owner = foreign()
if owner then
  return owner
end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[5])
return false
"""


class SiteState:
    """The site state of ``gateway``. With ``identity`` (what a node runs with) every
    heartbeat checks the namespace's stamp first (:mod:`dmg.site.identity`); ``where``
    names the Redis in messages (no password)."""

    def __init__(self, client: redis.Redis, gateway: str, *, identity: SiteIdentity | None = None,
                 where: str = "") -> None:
        self.redis = client
        self.gateway = gateway
        self.prefix = f"dmg:{gateway}:"
        self.identity = identity
        self.where = where or "the site's Redis"
        self._new_attempt = client.register_script(_NEW_ATTEMPT)
        self._mark_finished = client.register_script(_MARK_FINISHED)
        self._claim_identity = client.register_script(_CLAIM_IDENTITY)
        self._checked_heartbeat = client.register_script(_CHECKED_HEARTBEAT)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # -- identity --------------------------------------------------------------------
    def claim_identity(self) -> None:
        """Stamp the namespace with :attr:`identity` if it has no stamp; raises
        :class:`~dmg.site.identity.ForeignRedis` when another gateway's is there (and
        ``redis.RedisError`` when Redis cannot be reached). Without an identity: nothing."""
        if self.identity is None:
            return
        self._raise_if_foreign(self._claim_identity(
            keys=[self.key(IDENTITY_KEY)], args=[self.identity.token, self.identity.to_json()]))

    def _raise_if_foreign(self, owner: Any) -> None:
        if owner and self.identity is not None:
            raise ForeignRedis(where=self.where, owner=SiteIdentity.from_json(owner), mine=self.identity,
                               key=self.key(IDENTITY_KEY))

    # -- nodes -----------------------------------------------------------------------
    def publish_heartbeat(self, node: str, beat: dict[str, Any], *, ttl: float) -> None:
        """Publish ``node``'s heartbeat (expires after ``ttl`` s). With an identity, nothing
        is written to another gateway's namespace: raises ForeignRedis instead."""
        if self.identity is not None:
            self._raise_if_foreign(self._checked_heartbeat(
                keys=[self.key(IDENTITY_KEY), self.key("hb", node), self.key("nodes")],
                args=[self.identity.token, self.identity.to_json(), json.dumps(beat),
                      int(ttl * 1000), node]))
            return
        pipe = self.redis.pipeline()
        pipe.set(self.key("hb", node), json.dumps(beat), px=int(ttl * 1000))
        pipe.sadd(self.key("nodes"), node)
        pipe.execute()

    def heartbeats(self) -> dict[str, dict[str, Any]]:
        """Live heartbeats by node name (nodes whose key expired are absent)."""
        names = sorted(n.decode() if isinstance(n, bytes) else n
                       for n in self.redis.smembers(self.key("nodes")))
        if not names:
            return {}
        raw = self.redis.mget([self.key("hb", n) for n in names])
        return {n: json.loads(v) for n, v in zip(names, raw, strict=True) if v}

    def end_heartbeat(self, node: str) -> bool:
        """Expire ``node``'s heartbeat now (its process is gone, :mod:`dmg.site.presence`), unless
        it beat again meanwhile; True if it was removed. The node is offline from then on
        for everyone who reads heartbeats, until it beats again."""
        key = self.key("hb", node)
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                if pipe.get(key) is None:
                    return False
                pipe.multi()
                pipe.delete(key)
                pipe.execute()
                return True
            except redis.WatchError:  # it beat between our read and delete: it lives
                return False

    def forget_node(self, node: str) -> None:
        self.redis.srem(self.key("nodes"), node)
        self.redis.delete(self.key("hb", node), self.key("load", node))

    def publish_worker_load(self, node: str, *, running: int, limit: int,
                            pids: list[int], ttl: float) -> None:
        body = {"running": running, "limit": limit, "pids": pids, "ts": time.time()}
        self.redis.set(self.key("load", node), json.dumps(body), px=int(ttl * 1000))

    def worker_load(self, node: str) -> dict[str, Any] | None:
        raw = self.redis.get(self.key("load", node))
        return json.loads(raw) if raw else None

    def set_limit(self, node: str, limit: int) -> None:
        self.redis.set(self.key("limit", node), int(limit))

    def limit(self, node: str) -> int | None:
        raw = self.redis.get(self.key("limit", node))
        return int(raw) if raw is not None else None

    # -- shards ------------------------------------------------------------------------
    def save_shard(self, shard_id: str, spec: dict[str, Any]) -> None:
        """Record a planned shard (idempotent: an existing shard keeps its attempt)."""
        key = self.key("shard", shard_id)
        self.redis.hsetnx(key, "attempt", 0)
        self.redis.hset(key, mapping={"spec": json.dumps(spec)})
        self.redis.hsetnx(key, "state", SHARD_QUEUED)

    def shard(self, shard_id: str) -> dict[str, Any] | None:
        raw = self.redis.hgetall(self.key("shard", shard_id))
        if not raw:
            return None
        body = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                for k, v in raw.items()}
        return {
            "id": shard_id,
            "spec": json.loads(body.get("spec", "{}")),
            "attempt": int(body.get("attempt", 0)),
            "node": body.get("node", ""),
            "state": body.get("state", ""),
            "epoch": int(body.get("epoch") or 0),
            "deliveries": int(body.get("deliveries") or 0),
            "runner": body.get("runner", ""),
            "duplicates": int(body.get("duplicates") or 0),
        }

    def new_attempt(self, shard_id: str, node: str, *, epoch: int | None = None) -> int:
        """Start a new attempt of a shard on ``node``; older attempts can no longer commit.

        The shard leaves the queued/running sets of the node that held the older
        attempt: a fenced attempt no longer counts against that node's slots. With
        ``epoch`` (the dispatcher's lease epoch) the attempt is recorded with it, and
        nothing happens (returns 0) when a newer dispatcher took the lease since.
        A shard handed back by :func:`dmg.site.attempts.requeue` keeps the attempt that
        fenced the old one (it was never sent): numbers have no gap.
        """
        return int(self._new_attempt(keys=[self.key("shard", shard_id)],
                                     args=[self.prefix, shard_id, node, SHARD_QUEUED,
                                           "" if epoch is None else epoch]))

    def is_current(self, shard_id: str, attempt: int) -> bool:
        raw = self.redis.hget(self.key("shard", shard_id), "attempt")
        return raw is not None and int(raw) == attempt

    def mark_running(self, shard_id: str, attempt: int, node: str) -> bool:
        """Move a shard from queued to running on ``node``; False if ``attempt`` is stale
        or already finished. Atomic; a worker uses :func:`dmg.site.attempts.start_run`, which
        also refuses a second live execution."""
        from dmg.site.attempts import STARTED, start_run

        outcome, _ = start_run(self, shard_id, attempt, node, runner="", alive=lambda _token: False)
        return outcome == STARTED

    def mark_finished(self, shard_id: str, attempt: int, node: str, *, ok: bool) -> None:
        """Take the shard off ``node``'s queued/running sets and, if ``attempt`` is still
        current, record ``done``/``failed``. A stale attempt on the node that holds the
        newer attempt leaves the sets alone (they count the newer attempt)."""
        from dmg.connectors.base import staging_id

        self._mark_finished(
            keys=[self.key("shard", shard_id), self.key("queued", node), self.key("running", node),
                  self.key("started", node)],
            args=[attempt, shard_id, node, SHARD_DONE if ok else SHARD_FAILED,
                  staging_id(shard_id, attempt)])
        self.notify_dispatcher()

    def started(self, node: str) -> set[str]:
        """Staging ids of attempts ``node`` began and never ended (they died with it)."""
        return {m.decode() if isinstance(m, bytes) else m
                for m in self.redis.smembers(self.key("started", node))}

    def fenced_started(self, shard_id: str, attempt: int) -> list[tuple[str, str]]:
        """``(node, staging id)`` of every attempt of ``shard_id`` older than ``attempt`` that a
        node in ``nodes`` began and never ended (it died with its node, or runs on, fenced)."""
        from dmg.connectors.base import commit_key

        found = []
        for raw in sorted(self.redis.smembers(self.key("nodes"))):
            node = raw.decode() if isinstance(raw, bytes) else str(raw)
            for staging in sorted(self.started(node)):
                older = staging.rpartition(".")[2]
                if commit_key(staging) == shard_id and older.isdigit() and int(older) < attempt:
                    found.append((node, staging))
        return found

    def forget_started(self, node: str, staging: str) -> None:
        self.redis.srem(self.key("started", node), staging)

    # -- drain -------------------------------------------------------------------------
    def set_drain(self, node: str, reason: str = "drain") -> None:
        """Place nothing new on ``node`` (``reason``: ``drain`` or ``removed``)."""
        self.redis.hset(self.key("drain"), node, reason)
        self.notify_dispatcher()

    def clear_drain(self, node: str) -> bool:
        """Let ``node`` take work again; True if it was drained."""
        cleared = bool(self.redis.hdel(self.key("drain"), node))
        self.notify_dispatcher()
        return cleared

    def drained(self) -> dict[str, str]:
        """Drained nodes and why (``drain`` or ``removed``)."""
        raw = self.redis.hgetall(self.key("drain"))
        return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in raw.items()}

    def queued(self, node: str) -> set[str]:
        return {m.decode() if isinstance(m, bytes) else m
                for m in self.redis.smembers(self.key("queued", node))}

    def running(self, node: str) -> set[str]:
        return {m.decode() if isinstance(m, bytes) else m
                for m in self.redis.smembers(self.key("running", node))}

    # -- dispatcher backlog -------------------------------------------------------------
    def push_pending(self, *shard_ids: str) -> None:
        if shard_ids:
            self.redis.rpush(self.key("pending"), *shard_ids)
            self.notify_dispatcher()

    def notify_dispatcher(self) -> None:
        """Wake the dispatcher's placement loop: a slot freed up or work arrived."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(self.key("wake"), 1)
        pipe.ltrim(self.key("wake"), 0, 0)
        pipe.execute()

    def wait_for_change(self, timeout: float) -> bool:
        """Block up to ``timeout`` s until :meth:`notify_dispatcher`; True when woken."""
        if timeout <= 0:
            return False
        woken = self.redis.blpop([self.key("wake")], timeout=timeout) is not None
        if woken:
            self.redis.delete(self.key("wake"))
        return woken

    def pending(self) -> list[str]:
        return [m.decode() if isinstance(m, bytes) else m
                for m in self.redis.lrange(self.key("pending"), 0, -1)]

    def drop_pending(self, shard_id: str) -> None:
        self.redis.lrem(self.key("pending"), 1, shard_id)

    def begin_planning(self, activity_run_id: str) -> None:
        """Note that an activity run is being planned, until :meth:`end_planning`: a new
        dispatcher replays the plans of the runs still listed (its predecessor died)."""
        self.redis.sadd(self.key("planning"), activity_run_id)

    def end_planning(self, activity_run_id: str) -> None:
        self.redis.srem(self.key("planning"), activity_run_id)

    def planning(self) -> set[str]:
        return {m.decode() if isinstance(m, bytes) else m
                for m in self.redis.smembers(self.key("planning"))}

    # -- bandwidth -------------------------------------------------------------------------
    def set_bandwidth(self, activity_run_id: str, bytes_per_s: int, *, ttl: float = 7 * 24 * 3600) -> None:
        """Set an activity run's bandwidth limit (0: none); running shards apply it within ~1 s."""
        self.redis.set(self.key("bw", activity_run_id), int(bytes_per_s), px=int(ttl * 1000))

    def bandwidth(self, activity_run_id: str) -> int | None:
        """The limit set with :meth:`set_bandwidth`; None when none was (the activity's option applies)."""
        raw = self.redis.get(self.key("bw", activity_run_id))
        return int(raw) if raw is not None else None

    # -- cancellation ----------------------------------------------------------------------
    def cancel(self, activity_run_id: str, *, ttl: float = 7 * 24 * 3600) -> list[str]:
        """Flag an activity run cancelled (idempotent) and drop its pending shards; -> the
        shard ids dropped. Workers check the flag as they check fencing: a shard of a
        cancelled run does not start, and a running one stops (:meth:`is_cancelled`)."""
        self.redis.set(self.key("cancelled", activity_run_id), 1, px=int(ttl * 1000))
        mine = [s for s in self.pending() if s.startswith(f"{activity_run_id}-")]
        for shard_id in mine:
            self.drop_pending(shard_id)
        return mine

    def is_cancelled(self, activity_run_id: str) -> bool:
        return bool(activity_run_id) and bool(self.redis.exists(self.key("cancelled", activity_run_id)))
