"""The life of a shard attempt in the site state, beyond placement: start, hand back, re-issue.

Each operation is one Redis script, so it is atomic against every other writer
(the dispatcher, the node that runs the shard, a node that restarts, the CLI):

- :func:`start_run`: a worker takes a delivery of ``(shard, attempt)``. It starts
  only if the attempt is still current, was not dispatched by a superseded epoch,
  is not finished (a late redelivery of a finished attempt is a no-op) and no live
  process of this node already runs it (a broker redelivery of a running shard,
  DESIGN.md's visibility-timeout trap). Each start counts a *delivery*; every
  delivery after the first means the process that ran the attempt before died.
- :func:`requeue`: take a shard off a node (dead, restarted, drained, removed):
  its attempt is bumped (the old one is fenced off: it can no longer start or
  commit) and it goes to the head of ``pending`` for the dispatcher to place.
  The new attempt is kept *unsent* (``unsent`` in the hash): placement
  (:meth:`dmg.site.state.SiteState.new_attempt`) sends that very number instead of
  bumping again, so attempts are numbered 1, 2, 3 with no gap. Why the old attempt
  ended (:mod:`dmg.attempt_ends`) is kept in ``ended_reason``/``ended_at`` until the
  dispatcher reports the next placement to the cloud.
- :func:`reissue`: a new dispatcher cannot know whether its predecessor's
  message for a queued shard went out; it re-issues the shard on the same node
  with a new attempt, unless the node started it meanwhile.

A *runner* token names the process that runs an attempt: ``<pid>@<create time>``
(:func:`runner_token`); the shard hash keeps it in ``runner``. Liveness is
checked by the caller on the node (:mod:`workers.delivery`) or from the pids a
node's worker publishes (:mod:`dispatcher.recovery`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from dmg.attempt_ends import FENCED

if TYPE_CHECKING:
    from dmg.site.state import SiteState

STARTED = "started"
STALE = "stale"
DUPLICATE = "duplicate"
#: The state of a shard handed back by :func:`requeue`, waiting in ``pending``.
PENDING = "pending"

# KEYS: shard hash, queued set, running set, started set.
# ARGV: attempt, shard id, node, running state, my runner, runner seen, seen alive (1/0),
#       epoch of the message ('' when unknown), staging id.
# -> {outcome, deliveries}; 'retry' when the runner changed since the caller looked.
_START_RUN = """
local h = redis.call('HMGET', KEYS[1], 'attempt', 'state', 'runner', 'epoch', 'node')
if h[1] ~= ARGV[1] then return {'stale', 0} end
if ARGV[8] ~= '' and h[4] and h[4] ~= '' and h[4] ~= ARGV[8] then return {'stale', 0} end
if h[2] == 'done' or h[2] == 'failed' then return {'stale', 0} end
if h[5] and h[5] ~= '' and h[5] ~= ARGV[3] then return {'stale', 0} end
local runner = h[3] or ''
if runner ~= ARGV[6] then return {'retry', 0} end
if h[2] == ARGV[4] and runner ~= '' and ARGV[7] == '1' then
  redis.call('HINCRBY', KEYS[1], 'duplicates', 1)
  return {'duplicate', 0}
end
local deliveries = redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'runner', ARGV[5], 'node', ARGV[3])
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[9])
return {'started', deliveries}
"""

# KEYS: shard hash. ARGV: prefix, shard id, node, epoch ('' = not the dispatcher), pending state,
#       why the old attempt ended, when (POSIX seconds).
# -> the new attempt; 0 when the shard is not queued/running on that node; -1 when the epoch
#    is superseded. The new attempt is *unsent*: placement sends it without a second bump.
_REQUEUE = """
if ARGV[4] ~= '' and redis.call('GET', ARGV[1] .. 'epoch') ~= ARGV[4] then return -1 end
redis.call('SREM', ARGV[1] .. 'queued:' .. ARGV[3], ARGV[2])
redis.call('SREM', ARGV[1] .. 'running:' .. ARGV[3], ARGV[2])
local h = redis.call('HMGET', KEYS[1], 'node', 'state')
if h[1] ~= ARGV[3] or (h[2] ~= 'queued' and h[2] ~= 'running') then return 0 end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'node', '', 'state', ARGV[5], 'deliveries', 0, 'runner', '',
           'unsent', attempt, 'ended_reason', ARGV[6], 'ended_at', ARGV[7])
redis.call('LREM', ARGV[1] .. 'pending', 0, ARGV[2])
redis.call('LPUSH', ARGV[1] .. 'pending', ARGV[2])
redis.call('LPUSH', ARGV[1] .. 'wake', 1)
redis.call('LTRIM', ARGV[1] .. 'wake', 0, 0)
return attempt
"""

# KEYS: shard hash. ARGV: prefix, node, epoch, attempt seen, queued state.
# -> the new attempt; 0 when the shard moved on (started, finished, elsewhere); -1 superseded.
_REISSUE = """
if redis.call('GET', ARGV[1] .. 'epoch') ~= ARGV[3] then return -1 end
local h = redis.call('HMGET', KEYS[1], 'node', 'state', 'attempt')
if h[1] ~= ARGV[2] or h[2] ~= ARGV[5] or h[3] ~= ARGV[4] then return 0 end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'deliveries', 0, 'runner', '', 'epoch', ARGV[3])
return attempt
"""

#: How often :func:`start_run` re-reads a runner that changed under it before giving up.
_START_TRIES = 8


def runner_token(pid: int, created: float) -> str:
    """The runner token of process ``pid`` started at ``created`` (POSIX seconds)."""
    return f"{pid}@{created:.3f}"


def runner_pid(token: str) -> int | None:
    """The pid in a runner token; None for an empty or foreign token."""
    head = token.split("@", 1)[0]
    return int(head) if head.isdigit() else None


def start_run(state: SiteState, shard_id: str, attempt: int, node: str, *, runner: str,
              alive: Callable[[str], bool], epoch: int | None = None) -> tuple[str, int]:
    """Try to start ``attempt`` of ``shard_id`` on ``node`` in process ``runner``.

    Returns ``(outcome, deliveries)``: :data:`STARTED` with the number of times this
    attempt has started (1 the first time), :data:`STALE` (fenced, finished, from a
    superseded epoch, or placed elsewhere) or :data:`DUPLICATE` (``alive(token)`` says
    the process that runs it is still there: this delivery must do nothing).
    """
    from dmg.connectors.base import staging_id as staging_id_of
    from dmg.site.state import SHARD_RUNNING

    script = state.redis.register_script(_START_RUN)
    shard_key = state.key("shard", shard_id)
    keys = [shard_key, state.key("queued", node), state.key("running", node), state.key("started", node)]
    for _ in range(_START_TRIES):
        raw = state.redis.hget(shard_key, "runner")
        seen = (raw.decode() if isinstance(raw, bytes) else raw) or ""
        seen_alive = bool(seen) and seen != runner and alive(seen)
        outcome, deliveries = script(
            keys=keys,
            args=[attempt, shard_id, node, SHARD_RUNNING, runner, seen, "1" if seen_alive else "0",
                  "" if epoch is None else epoch, staging_id_of(shard_id, attempt)])
        outcome = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
        if outcome != "retry":
            return outcome, int(deliveries)
    return DUPLICATE, 0  # the runner keeps changing: other deliveries are racing for it


def requeue(state: SiteState, shard_id: str, node: str, *, epoch: int | None = None,
            reason: str = FENCED, now: float | None = None) -> int:
    """Take ``shard_id`` off ``node`` and put it first in ``pending`` with a new attempt.

    ``reason`` (one of :data:`dmg.attempt_ends.REPLACED`) says why the old attempt
    ended, at ``now`` (default: the current time). Returns the new attempt, 0 when the
    shard is not queued or running on ``node`` (it moved on: nothing to do), -1 when
    ``epoch`` is given and superseded. Always removes the shard from ``node``'s
    queued/running sets.
    """
    script = state.redis.register_script(_REQUEUE)
    at = time.time() if now is None else now
    return int(script(keys=[state.key("shard", shard_id)],
                      args=[state.prefix, shard_id, node, "" if epoch is None else epoch, PENDING,
                            reason, f"{at:.3f}"]))


def reissue(state: SiteState, shard_id: str, node: str, *, attempt: int, epoch: int) -> int:
    """Give a shard still queued on ``node`` under ``attempt`` a new attempt on the same node.

    Returns the new attempt (the caller sends its message), 0 when the shard started,
    finished or moved meanwhile, -1 when ``epoch`` is superseded.
    """
    from dmg.site.state import SHARD_QUEUED

    script = state.redis.register_script(_REISSUE)
    return int(script(keys=[state.key("shard", shard_id)],
                      args=[state.prefix, node, epoch, attempt, SHARD_QUEUED]))
