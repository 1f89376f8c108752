"""The shard records of a site: ``shard:<id>`` and the per-node sets that count shards.

A shard's hash (:mod:`dmg.site.keys`) holds its ``spec`` (JSON), its ``attempt``
(only grows: :mod:`dmg.site.fencing`), the ``node`` it is placed on, its ``state``
(:data:`~dmg.shards.status.STATE_QUEUED` → ``STATE_RUNNING`` → ``STATE_DONE`` / ``STATE_FAILED``,
or ``pending`` while handed back, :mod:`dmg.site.attempts`), the placing dispatcher's
``epoch``, ``deliveries``, ``runner``, ``duplicates``, ``unsent``, ``ended_reason`` and
``ended_at``. Every change of ``attempt``, ``node`` or ``state`` is one script of
:mod:`dmg.site.scripts`; the sets ``queued:<node>``, ``running:<node>`` and
``started:<node>`` change in the same script.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from dmg.ids import commit_key, staging_id
from dmg.shards.status import STATE_DONE, STATE_FAILED, STATE_QUEUED
from dmg.site import scripts
from dmg.site.fencing import is_current
from dmg.site.keys import SiteKeys


class ShardRecords:
    """The shard records of one site; :class:`dmg.site.state.SiteState` is one."""

    def __init__(self, client: redis.Redis, keys: SiteKeys) -> None:
        self.redis = client
        self.keys = keys
        self.prefix = keys.prefix
        self._new_attempt = client.register_script(scripts.NEW_ATTEMPT)
        self._mark_finished = client.register_script(scripts.MARK_FINISHED)

    def save_shard(self, shard_id: str, spec: dict[str, Any]) -> None:
        """Record a planned shard (idempotent: an existing shard keeps its attempt)."""
        key = self.keys.shard(shard_id)
        self.redis.hsetnx(key, "attempt", 0)
        self.redis.hset(key, mapping={"spec": json.dumps(spec)})
        self.redis.hsetnx(key, "state", STATE_QUEUED)

    def shard(self, shard_id: str) -> dict[str, Any] | None:
        raw = self.redis.hgetall(self.keys.shard(shard_id))
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
        return int(self._new_attempt(keys=[self.keys.shard(shard_id)],
                                     args=[self.prefix, shard_id, node, STATE_QUEUED,
                                           "" if epoch is None else epoch]))

    def is_current(self, shard_id: str, attempt: int) -> bool:
        """Whether ``attempt`` is ``shard_id``'s current attempt (:func:`dmg.site.fencing.is_current`)."""
        return is_current(self.redis, self.keys, shard_id, attempt)

    def mark_finished(self, shard_id: str, attempt: int, node: str, *, ok: bool) -> None:
        """Take the shard off ``node``'s queued/running sets and, if ``attempt`` is still
        current, record ``done``/``failed``. A stale attempt on the node that holds the
        newer attempt leaves the sets alone (they count the newer attempt)."""
        self._mark_finished(
            keys=[self.keys.shard(shard_id), self.keys.queued(node), self.keys.running(node),
                  self.keys.started(node)],
            args=[attempt, shard_id, node, STATE_DONE if ok else STATE_FAILED,
                  staging_id(shard_id, attempt)])
        self.notify_dispatcher()

    def started(self, node: str) -> set[str]:
        """Staging ids of attempts ``node`` began and never ended (they died with it)."""
        return {m.decode() if isinstance(m, bytes) else m
                for m in self.redis.smembers(self.keys.started(node))}

    def fenced_started(self, shard_id: str, attempt: int) -> list[tuple[str, str]]:
        """``(node, staging id)`` of every attempt of ``shard_id`` older than ``attempt`` that a
        node in ``nodes`` began and never ended (it died with its node, or runs on, fenced)."""
        found = []
        for raw in sorted(self.redis.smembers(self.keys.nodes)):
            node = raw.decode() if isinstance(raw, bytes) else str(raw)
            for staging in sorted(self.started(node)):
                older = staging.rpartition(".")[2]
                if commit_key(staging) == shard_id and older.isdigit() and int(older) < attempt:
                    found.append((node, staging))
        return found

    def forget_started(self, node: str, staging: str) -> None:
        self.redis.srem(self.keys.started(node), staging)

    def queued(self, node: str) -> set[str]:
        return {m.decode() if isinstance(m, bytes) else m
                for m in self.redis.smembers(self.keys.queued(node))}

    def running(self, node: str) -> set[str]:
        return {m.decode() if isinstance(m, bytes) else m
                for m in self.redis.smembers(self.keys.running(node))}

    def carried(self, node: str) -> set[str]:
        """The shards queued on ``node`` behind the first of a packed message (dispatcher.packing)."""
        return {m.decode() if isinstance(m, bytes) else m
                for m in self.redis.smembers(self.keys.carried(node))}

    def notify_dispatcher(self) -> None:
        """Wake the dispatcher's placement loop: a slot freed up or work arrived."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(self.keys.wake, 1)
        pipe.ltrim(self.keys.wake, 0, 0)
        pipe.execute()
