"""One large object written from several nodes: its shared state in Redis, and one commit.

The planner splits an object into *part shards* (:mod:`dispatcher.splitting`);
each may run on any node. This module keeps, per split object (``<activity run
id>:<object index>``, keys under ``dmg:<gateway>:``):

====================  ==========================================================
``split:<object>``    the sink's write handle (JSON), set once (``SET NX``): a
                      replayed plan reuses it instead of beginning a second write
``parts:<object>``    hash: part number -> the part's result (JSON, see
                      :mod:`dmg.connectors.distributed`)
``commit:<object>``   the commit marker: absent (parts still missing), the owner
                      ``<shard>:<attempt>`` that commits, ``done`` or ``aborted``
====================  ==========================================================

**Exactly one commit.** :meth:`SplitObjects.record_part` records a part only for
the shard's current attempt and, atomically, hands the commit to the shard whose
part completed the set (``COMMIT``): the marker names it. Everybody else who
finds the marker held does nothing more. When the owner dies mid-commit, its
shard runs again with a new attempt, finds the marker held by an attempt that is
no longer current and takes the commit over (:meth:`SplitObjects.take_over`); the
sink's commit is idempotent, so a commit that had in fact gone through is a
no-op. A failed part marks the object ``aborted`` (the sink's write is aborted
once) and the remaining parts stop.
"""

from __future__ import annotations

import json
from typing import Any

from dmg.site import scripts
from dmg.site.state import SiteState

#: How long the state of a split object stays in Redis (as long as a plan).
SPLIT_TTL = 7 * 24 * 3600

RECORDED = "recorded"  # the part is recorded; other parts are still missing
COMMIT = "commit"  # the part completed the set: the caller commits
HELD = "held"  # every part is in; another shard (attempt) commits
DONE = "done"  # the object is committed
ABORTED = "aborted"  # the write was abandoned
STALE = "stale"  # the caller's attempt is no longer current: nothing recorded





def owner_token(shard_id: str, attempt: int) -> str:
    return f"{shard_id}:{int(attempt)}"


def parse_owner(token: str) -> tuple[str, int] | None:
    """``(shard id, attempt)`` of an owner token; None for ``done``/``aborted``/garbage."""
    head, _, tail = token.rpartition(":")
    return (head, int(tail)) if head and tail.isdigit() else None


def _text(raw: Any) -> str | None:
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class SplitObjects:
    """The split objects of a site (see the module docstring)."""

    def __init__(self, state: SiteState) -> None:
        self.state = state
        self._record = state.redis.register_script(scripts.RECORD_PART)
        self._take_over = state.redis.register_script(scripts.TAKE_OVER)
        self._finish = state.redis.register_script(scripts.FINISH)

    def save_handle(self, object_key: str, handle: dict[str, Any]) -> dict[str, Any]:
        """Record the write handle unless one is; returns the recorded one (maybe another)."""
        key = self.state.keys.split(object_key)
        if self.state.redis.set(key, json.dumps(handle), nx=True, ex=SPLIT_TTL):
            return handle
        return self.handle(object_key) or handle

    def handle(self, object_key: str) -> dict[str, Any] | None:
        raw = _text(self.state.redis.get(self.state.keys.split(object_key)))
        return json.loads(raw) if raw else None

    def record_part(self, object_key: str, shard_id: str, attempt: int, part: dict[str, Any], *,
                    parts_total: int) -> str:
        """Record ``part`` (with its ``part_number``) for ``attempt`` of ``shard_id``; returns
        :data:`RECORDED`, :data:`COMMIT`, :data:`HELD`, :data:`DONE`, :data:`ABORTED` or :data:`STALE`."""
        keys = [self.state.keys.shard(shard_id), self.state.keys.parts(object_key),
                self.state.keys.commit_marker(object_key)]
        args: list[str | int] = [attempt, int(part["part_number"]), json.dumps(part), parts_total,
                owner_token(shard_id, attempt), SPLIT_TTL]
        return _text(self._record(keys=keys, args=args)) or STALE

    def parts(self, object_key: str) -> list[dict[str, Any]]:
        """The recorded parts, by part number."""
        raw = self.state.redis.hgetall(self.state.keys.parts(object_key))
        return sorted((json.loads(_text(v) or "{}") for v in raw.values()),
                      key=lambda p: int(p["part_number"]))

    def marker(self, object_key: str) -> str | None:
        """The commit marker: None, an owner token, :data:`DONE` or :data:`ABORTED`."""
        return _text(self.state.redis.get(self.state.keys.commit_marker(object_key)))

    def owner_gone(self, token: str) -> bool:
        """Whether the commit owner ``token`` can no longer commit (its attempt was replaced)."""
        owner = parse_owner(token)
        return owner is None or not self.state.is_current(*owner)

    def take_over(self, object_key: str, seen: str, shard_id: str, attempt: int) -> bool:
        """Become the commit owner if the marker still names ``seen``."""
        return bool(self._take_over(keys=[self.state.keys.commit_marker(object_key)],
                                    args=[seen, owner_token(shard_id, attempt), SPLIT_TTL]))

    def mark_done(self, object_key: str) -> None:
        self._finish(keys=[self.state.keys.commit_marker(object_key)], args=[DONE, SPLIT_TTL])

    def mark_aborted(self, object_key: str) -> bool:
        """Mark the write abandoned; True for the caller that did (it aborts the sink's write)."""
        return bool(self._finish(keys=[self.state.keys.commit_marker(object_key)], args=[ABORTED, SPLIT_TTL]))
