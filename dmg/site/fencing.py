"""How a commit is fenced: the rule, in one place.

**The attempt.** A shard's hash ``shard:<id>`` (:mod:`dmg.site.shards`) holds an
``attempt`` counter that only grows. Every script that places, moves, re-issues or
hands back a shard bumps it (:mod:`dmg.site.scripts`: ``NEW_ATTEMPT``,
``MOVE_QUEUED``, ``REISSUE``, ``REQUEUE``), and the task message carries the number
(task id ``<shard>:<attempt>``). The attempt named by the hash is the *current* one;
every older attempt is *fenced off*. :func:`is_current` is the one test of that.

**Staging.** An attempt writes only under its staging id, ``<shard>.<attempt>``
(:func:`dmg.ids.staging_id`): hidden files, uncommitted blocks, an open transaction.
Nobody sees staged bytes; a fenced attempt's leftovers are removed by id
(``started:<node>`` lists the staging ids a node began, :mod:`workers.run.leftovers`).

**The check right before the commit.** The transfer engine asks ``may_commit()``
after a file's bytes are staged and verified and immediately before
``writer.commit()`` (or before a server-side copy, which is a commit in one
request); the worker passes ``lambda: state.is_current(shard, attempt)``. Small
files (under 1 MiB) are staged in batches of up to 64 by one thread and checked
**once per batch**, right before the batch's first commit: the rule is the same
for every file (a check that began after its bytes were staged and before its
commit), one round trip serves the batch. A check older than half a second is
made again before the next commit of the batch (a process paused mid-batch checks
again when it wakes), and a batch whose staging takes that long commits what it
has so far (``dmg.transfer.engine.copy_batch``). :class:`SharedCheck` lets the
threads of one shard share a round trip without ever answering with a check that
began before the caller asked. A ``False`` raises ``StaleAttempt``: every staged
file in hand is aborted, the attempt ends ``stale``.

**The sink's own guard.** A check and a commit are two steps; an attempt fenced
between them may still commit. Each sink's commit is therefore idempotent per
target: a rename or block-list commit of the same bytes, or for SQL one
transaction with a marker row keyed by the commit key (the shard part of the
staging id, :func:`dmg.ids.commit_key`), which every attempt of the shard shares,
so a replay inserts nothing twice. Split objects have one commit marker per object
owned by one ``<shard>:<attempt>`` (:mod:`dmg.site.splits`).

**What a stale attempt can do:** finish writing its staging place, abort it, end
itself (``mark_finished`` leaves the shard's state alone and does not touch the
sets that count the newer attempt) and report how it ended. **What it cannot do:**
start (``START_RUN`` refuses a non-current attempt, one from a superseded dispatcher
epoch, or a finished one), commit after a ``may_commit()`` that saw it fenced, record
a part of a split object, or change the shard's state or the node it is placed on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

    from dmg.site.keys import SiteKeys


def is_current(client: redis.Redis, keys: SiteKeys, shard_id: str, attempt: int) -> bool:
    """Whether ``attempt`` is the current attempt of ``shard_id`` (the ``attempt`` field
    of ``shard:<id>``): the only attempt allowed to start, record parts and commit.

    False for an older attempt and for a shard with no record. One read, no
    side effect; raises what the Redis client raises when the broker is away.
    """
    raw = client.hget(keys.shard(shard_id), "attempt")
    return raw is not None and int(raw) == attempt


class SharedCheck:
    """Wraps ``check`` (thread-safe): each caller gets the outcome of a check that began
    after it asked; callers that ask while one runs share the next one."""

    def __init__(self, check: Callable[[], bool]) -> None:
        self._check = check
        self._cond = threading.Condition()
        self._started = 0  # generation of the last check begun
        self._finished = 0  # generation of the last check ended
        self._running = False
        self._outcome: tuple[bool, BaseException | None] = (False, None)

    def __call__(self) -> bool:
        with self._cond:
            need = self._started + 1  # only a check that begins after this call will do
            while self._finished < need:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                self._started += 1
                generation = self._started
                self._cond.release()
                try:
                    outcome: tuple[bool, BaseException | None] = (bool(self._check()), None)
                except BaseException as exc:  # handed to every waiter, raised below
                    outcome = (False, exc)
                finally:
                    self._cond.acquire()
                self._running = False
                self._finished = generation
                self._outcome = outcome
                self._cond.notify_all()
            value, error = self._outcome
        if error is not None:
            raise error
        return value
