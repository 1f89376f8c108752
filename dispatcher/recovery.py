"""Recovery: the work of nodes (and of a dispatcher) that died goes on elsewhere.

The dispatcher owns recovery, not the broker (DESIGN.md: a dead node's unacked
messages come back only after the visibility timeout, into its own queue). Every
move is :func:`dmg.site.attempts.requeue`: the shard gets a new attempt, which fences
the old one off (it can neither start nor commit: the copy engine asks
``SiteState.is_current`` before each commit), and goes first in ``pending``, so
placement sends it to a live node in its next round.

- :func:`requeue_offline`: a node is offline when its heartbeat key expired
  (``settings.offline_after`` s without a beat). Every shard queued *or running*
  on it is requeued.
- :func:`retire_gone`: a node whose processes all lost their Redis connections
  (:class:`dmg.site.presence.PresenceWatch`: SIGKILL, a crash, a clean exit) is dead
  although its heartbeat has not expired yet; its heartbeat is expired at once, so
  it is offline for placement and :func:`requeue_offline` moves its shards within a
  second or two instead of ``offline_after`` s. A machine that vanishes silently
  keeps its connections open on Redis' side: the heartbeat timeout finds it.
- :func:`requeue_gone`: a node flagged removed (``dmg node remove``, or the node
  itself once the cloud refused its token) is gone even while its process still
  beats: every shard queued or running on it is requeued, so none stays placed on it.
- :class:`OrphanWatch`: a shard running on a live node whose runner process is
  not among the pool processes the node's worker publishes (``load:<node>``) for
  ``grace`` s lost its execution without the broker bringing it back (a pool
  process died after the visibility timeout had already restored its message);
  it is requeued too.
- :class:`StrandedWatch`: a shard queued on a live node that has a free slot and an
  empty broker queue (and, for a shard carried by a packed message,
  :mod:`dispatcher.packing`, no shard running there: its message may be the one running),
  under the same attempt for ``grace`` s, lost its message (a
  worker that had taken it when its broker connection broke drops it, and kombu leaves
  it to the visibility timeout): it is re-issued on the same node
  (:func:`reissue_queued` does the same for every queued shard after a broker outage).
- :func:`take_over`: what a new dispatcher does before it places anything. It
  cannot know whether its predecessor's message for a queued shard went out (it
  may have died between recording the attempt and sending it), so it re-issues
  every shard still queued on a live node (:func:`dmg.site.attempts.reissue`: a new
  attempt on the same node, unless the node started it meanwhile), and it replays
  the plans its predecessor had not finished pushing (``planning``). It confirms to
  the cloud where every shard running on a live node was placed (its predecessor's
  ``placed`` report may have been lost with it).

With ``epoch`` every move is made only while that epoch holds the lease.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from dmg.attempt_ends import NODE_OFFLINE, NODE_REMOVED, WORKER_DIED
from dmg.shards.status import STATE_QUEUED, STATE_RUNNING
from dmg.site.attempts import reissue, requeue, runner_pid
from dmg.site.state import DRAIN_REMOVED, SiteState
from settings.celery import broker_key_prefix
from workers.names import node_queue

if TYPE_CHECKING:
    from dispatcher.placement import Placer

log = logging.getLogger(__name__)


def known_nodes(state: SiteState) -> set[str]:
    return {n.decode() if isinstance(n, bytes) else str(n)
            for n in state.redis.smembers(state.keys.nodes)}


def requeue_offline(state: SiteState, *, epoch: int | None = None) -> list[str]:
    """Requeue the queued and running shards of every offline node; returns their ids."""
    live = set(state.heartbeats())
    return _requeue_nodes(state, sorted(known_nodes(state) - live), reason=NODE_OFFLINE, epoch=epoch)


def _requeue_nodes(state: SiteState, nodes: Iterable[str], *, reason: str, epoch: int | None) -> list[str]:
    """Give every queued and running shard of ``nodes`` a new attempt, the old one ended for
    ``reason``; returns their ids (stops as soon as a newer dispatcher took over)."""
    moved: list[str] = []
    for node in nodes:
        for shard_id in sorted(state.queued(node) | state.running(node)):
            attempt = requeue(state, shard_id, node, epoch=epoch, reason=reason)
            if attempt < 0:
                return moved  # a newer dispatcher took over
            if attempt > 0:
                moved.append(shard_id)
                log.warning("shard back to pending shard=%s node=%s attempt=%d because=%s",
                            shard_id, node, attempt, reason)
    return moved


def retire_gone(state: SiteState, gone: Iterable[str]) -> list[str]:
    """Expire the heartbeat of each node in ``gone`` that still has one; returns those
    nodes (offline from now on, until they beat again)."""
    retired = []
    for node in sorted(gone):
        if state.end_heartbeat(node):
            retired.append(node)
            log.warning("node process gone (no connection to the broker); offline now node=%s", node)
    return retired


def requeue_gone(state: SiteState, *, epoch: int | None = None) -> list[str]:
    """Requeue the queued and running shards of every node flagged removed; returns their ids.

    Its own copies are fenced off by the new attempts (a removed node's reports are
    refused by the cloud anyway)."""
    removed = sorted(n for n, flag in state.drained().items() if flag == DRAIN_REMOVED)
    return _requeue_nodes(state, removed, reason=NODE_REMOVED, epoch=epoch)


#: The name issue 2 used, when only queued shards moved.
requeue_offline_queued = requeue_offline


class OrphanWatch:
    """Finds running shards whose process is gone from a live node; see the module docstring."""

    def __init__(self, *, grace: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self.clock = clock
        self._suspects: dict[tuple[str, int, str], float] = {}  # (shard, attempt, runner) -> since

    def check(self, state: SiteState, *, epoch: int | None = None) -> list[str]:
        """One round; returns the shards requeued."""
        now = self.clock()
        suspects: dict[tuple[str, int, str], float] = {}
        moved: list[str] = []
        for node in sorted(state.heartbeats()):
            load = state.worker_load(node)
            pids = set((load or {}).get("pids") or ())
            if not pids:
                continue  # no live pool published: nothing to judge by
            for shard_id in sorted(state.running(node)):
                shard = state.shard(shard_id)
                if shard is None or shard["node"] != node or shard["state"] != STATE_RUNNING:
                    continue
                pid = runner_pid(shard["runner"])
                if pid is None or pid in pids:
                    continue
                key = (shard_id, shard["attempt"], shard["runner"])
                since = suspects[key] = self._suspects.get(key, now)
                if now - since < self.grace:
                    continue
                if requeue(state, shard_id, node, epoch=epoch, reason=WORKER_DIED) > 0:
                    moved.append(shard_id)
                    suspects.pop(key, None)
                    log.warning("shard lost its process on a live node; back to pending shard=%s node=%s "
                                "runner=%s", shard_id, node, shard["runner"])
        self._suspects = suspects
        return moved


def reissue_queued(state: SiteState, placer: Placer, *, epoch: int) -> list[str] | None:
    """Give every shard queued on a live node a new attempt there and send its message.

    Its old message may be gone: never sent by a dead predecessor, or lost with a broker
    restart (a worker that had taken it drops it when its connection breaks, and kombu
    cannot hand it back to a broker that is down: it waits out the visibility timeout).
    An old message that does arrive is stale and does nothing. Returns the re-issued ids,
    None when ``epoch`` is superseded.
    """
    reissued: list[str] = []
    for node in sorted(state.heartbeats()):
        for shard_id in sorted(state.queued(node)):
            shard = state.shard(shard_id)
            if shard is None or shard["node"] != node or shard["state"] != STATE_QUEUED:
                continue
            attempt = reissue_one(state, placer, shard_id, node, int(shard["attempt"]), epoch=epoch)
            if attempt < 0:
                return None
            if attempt > 0:
                reissued.append(shard_id)
    return reissued


def reissue_one(state: SiteState, placer: Placer, shard_id: str, node: str, attempt: int, *,
                epoch: int) -> int:
    """A new attempt of ``shard_id``, still queued on ``node`` under ``attempt``, on the same
    node, and its message; returns it, 0 when the shard started, ended or moved meanwhile,
    -1 when ``epoch`` is superseded."""
    new = reissue(state, shard_id, node, attempt=attempt, epoch=epoch)
    if new > 0:
        placer.reissue(shard_id, node, new, epoch=epoch)
    return new


class StrandedWatch:
    """Finds shards queued on a live node whose message will not reach it; see the module
    docstring. Not thread-safe: the lease holder's loop owns one."""

    def __init__(self, *, grace: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self.clock = clock
        self._suspects: dict[tuple[str, int], float] = {}  # (shard, attempt) -> since

    def check(self, state: SiteState, placer: Placer, *, epoch: int) -> list[str]:
        """One round; returns the shards re-issued."""
        now = self.clock()
        suspects: dict[tuple[str, int], float] = {}
        moved: list[str] = []
        drained = state.drained()  # a draining node does not take work: its shards move on
        for node in sorted(state.heartbeats()):
            queued = state.queued(node)
            if not queued or node in drained or not self._waits_for_work(state, node):
                continue
            # A carried shard waits behind the shards of its own message while one runs.
            behind = state.carried(node) if state.running(node) else set()
            for shard_id in sorted(queued - behind):
                shard = state.shard(shard_id)
                if shard is None or shard["node"] != node or shard["state"] != STATE_QUEUED:
                    continue
                key = (shard_id, int(shard["attempt"]))
                since = suspects[key] = self._suspects.get(key, now)
                if now - since < self.grace:
                    continue
                attempt = reissue_one(state, placer, shard_id, node, key[1], epoch=epoch)
                if attempt < 0:
                    return moved
                suspects.pop(key, None)
                if attempt > 0:
                    moved.append(shard_id)
                    log.warning("queued shard's message lost on a live node; sent again shard=%s "
                                "node=%s attempt=%d", shard_id, node, attempt)
        self._suspects = suspects
        return moved

    @staticmethod
    def _waits_for_work(state: SiteState, node: str) -> bool:
        """``node``'s worker has a free slot (by the load it publishes) and no message waits
        in its broker queue."""
        load = state.worker_load(node)
        if not load or int(load.get("running") or 0) >= int(load.get("limit") or 0):
            return False
        return not state.redis.llen(broker_key_prefix(state.gateway) + node_queue(node))


def take_over(state: SiteState, placer: Placer, *, epoch: int) -> tuple[list[str], set[str]]:
    """Re-issue the shards queued on live nodes and list the runs whose plan to replay.

    Returns ``(re-issued shard ids, activity run ids)``; activity runs whose plan
    was never recorded are forgotten here (the cloud hands them out again: they are
    claimed but not planned).
    """
    reissued = reissue_queued(state, placer, epoch=epoch)
    if reissued is None:
        return [], set()
    for node in sorted(state.heartbeats()):
        for shard_id in sorted(state.running(node)):
            shard = state.shard(shard_id)
            if shard is not None and shard["node"] == node and shard["state"] == STATE_RUNNING:
                placer.confirm(shard_id, node, int(shard["attempt"]))
    replay = set()
    for run_id in state.planning():
        if state.redis.exists(state.keys.plan(run_id)):
            replay.add(run_id)
        else:
            state.end_planning(run_id)
    if reissued or replay:
        log.info("took over epoch=%d reissued=%d plans_to_replay=%d", epoch, len(reissued), len(replay))
    return reissued, replay
