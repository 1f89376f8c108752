"""Placement: send pending shards to the node with the most free slots.

Each round reads the site's load from Redis: the nodes with a live heartbeat are
online; a node's limit comes from its worker-load key (else its heartbeat);
running and queued are the sizes of its ``running:<node>`` / ``queued:<node>``
sets; a node never gets a shard touching a store it cannot reach, or whose current
credential version it does not hold yet (its heartbeat's ``credentials_stale``,
:mod:`dmg.credentials.nodesync`). For each pending shard in order it picks a node with
:func:`dmg.placement.choose_node`, starts a new attempt, records its ``placed``
report for the cloud (node, attempt, why it waited, and why the previous attempt ended:
:mod:`dmg.attempt_ends`) in Redis (:mod:`dispatcher.reports`: the lease's holder sends
it, so it reaches the cloud even if this dispatcher dies next), then sends
``dmg.copy_shard(shard_id, attempt)`` to ``node.<name>`` with task id
``<shard>:<attempt>`` and drops the shard from pending. When the report or the message
cannot go out, the shard goes back to pending (a new attempt). A shard no node can
take stays pending.

With ``messages`` (:class:`dispatcher.messages.ShardMessages`: the sender is a Celery app on
the site's Redis, as in production) those four steps are one script
(:func:`dmg.site.placing.place_shard`): the message is built here and written to the node's
queue by the script that starts the attempt, records its report and drops the pending entry.
Without it (an in-memory sender in tests, another broker) the steps go one by one, the message
through ``send_task``. A shard this dispatcher planned itself (``fresh``,
:class:`dispatcher.fresh.FreshShards`) is placed by that script without a read of its hash
before it; the script refuses it if it is not fresh any more, and the next round reads it.

Fencing: ``holding()`` is asked before every placement; the round stops as soon
as it turns false. With ``epoch()`` (the lease's epoch) the new attempt is made
only if no newer dispatcher took the lease since (checked in Redis, atomically
with the attempt: a paused dispatcher that wakes up places nothing), and the
message carries the epoch. A pending entry whose shard already has a node (a
duplicate left by a dispatcher that died between placing and dropping it, or by
replanning) is dropped, never placed twice. Nodes flagged drained or removed
(``SiteState.set_drain``) get nothing new.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dispatcher.fresh import FreshShards
from dispatcher.messages import ShardMessages
from dispatcher.packing import pack_size
from dispatcher.ports import TaskSender
from dispatcher.reports import PlacementOutbox, ShardReports
from dmg.attempt_ends import NOT_SENT, REISSUED
from dmg.credentials.rules import entry_name, needs_credential
from dmg.errors import DmgError
from dmg.placement import NodeLoad, choose_node, record_placement
from dmg.shards import ShardSpec, ShardStores
from dmg.shards.status import CLOUD_PLACED
from dmg.site.attempts import requeue
from dmg.site.placing import SUPERSEDED, next_attempt, place_packed, place_shard
from dmg.site.state import SiteState
from dmg.version import __version__
from workers.names import COPY_SHARD, PACKED_CAPABILITY, copy_task_id, node_queue

log = logging.getLogger(__name__)

NO_NODE_ONLINE = "no node of the gateway is online"
ALL_NODES_BUSY = "every node is at its concurrent-job limit"
NO_POOL_RUNNING = "no online node has its worker pool running"
ALL_NODES_DRAINED = "every online node is drained or removed"
#: Reasons that say the site cannot work at all: they replace a "busy" reason noted earlier.
SITE_DOWN = (NO_NODE_ONLINE, NO_POOL_RUNNING, ALL_NODES_DRAINED)
#: Pending entries read per round trip.
WINDOW = 256


@dataclass
class Placement:
    shard_id: str
    node: str
    attempt: int
    wait_reason: str = ""
    #: Why the previous attempt ended (:mod:`dmg.attempt_ends`), and when; "" / None: not known here.
    previous_ended: str = ""
    previous_ended_at: float | None = None
    placed_at: float | None = None


@dataclass(frozen=True)
class PendingShard:
    #: The stores of the stored spec (its entries are not read: placement needs only the
    #: stores). None when the stored spec cannot be read: it is placed anyway (on any node),
    #: and the runner fails it with the reason, so the cloud shows why (no shard waits forever).
    spec: ShardStores | None
    node: str
    attempt: int
    ended_reason: str = ""
    ended_at: float | None = None
    #: The attempt a requeue bumped and never sent (placement sends that number).
    unsent: int | None = None


def node_loads(state: SiteState) -> list[NodeLoad]:
    """The load of every online node (live heartbeat), read from the site state.

    Two round trips whatever the number of nodes: the node names and the drain flags, then
    one pipeline for every node's heartbeat and worker load (one MGET) and queued/running
    counts.
    """
    return _site_load(state, count_pending=False)[1]


def _site_load(state: SiteState, *, count_pending: bool, window: list[str] | None = None,
               known: list[str] | None = None) -> tuple[int, list[NodeLoad]]:
    """``(pending shards, node loads)``; with ``count_pending``, ``(0, [])`` after one round
    trip when nothing is pending (an idle placement round costs one). ``window``: filled with
    the first :data:`WINDOW` pending shard ids, read with the loads (no round trip of its own).

    ``known``: the node names the caller saw last (sorted; replaced by the names read now).
    Their loads are read in the first round trip with the names themselves: when the names
    did not change (the usual case), one round trip in all, else a second for the new ones.
    The values read are as fresh either way (both ways read in one non-atomic round trip
    after the names)."""
    guessed = list(known) if known else []
    first = state.redis.pipeline(transaction=False)
    if count_pending:
        first.llen(state.keys.pending)
    first.smembers(state.keys.nodes)
    first.hgetall(state.keys.drain)
    if guessed:
        _queue_load_reads(first, state, guessed, window=window)
    answers = first.execute()
    pending = int(answers.pop(0)) if count_pending else 0
    raw_names, raw_drained = answers[:2]
    names = sorted(n.decode() if isinstance(n, bytes) else n for n in raw_names)
    if known is not None:
        known[:] = names
    if count_pending and not pending:
        return 0, []
    if not names:
        return pending, []
    drained = {k.decode() if isinstance(k, bytes) else k for k in raw_drained}
    if names == guessed:
        return pending, _loads_of(names, drained, answers[2:], window=window)
    pipe = state.redis.pipeline(transaction=False)
    _queue_load_reads(pipe, state, names, window=window)
    return pending, _loads_of(names, drained, pipe.execute(), window=window)


def _queue_load_reads(pipe: Any, state: SiteState, names: list[str], *, window: list[str] | None) -> None:
    """Queue on ``pipe`` the reads :func:`_loads_of` parses: the pending window (when asked),
    every heartbeat and worker load in one MGET (each node's load after the heartbeats), each
    node's running and queued counts."""
    if window is not None:
        pipe.lrange(state.keys.pending, 0, WINDOW - 1)
    pipe.mget([state.keys.heartbeat(name) for name in names] + [state.keys.load(name) for name in names])
    for name in names:
        pipe.scard(state.keys.running(name))
        pipe.scard(state.keys.queued(name))
        pipe.scard(state.keys.carried(name))


def _loads_of(names: list[str], drained: set[str], answers: list[Any], *,
              window: list[str] | None) -> list[NodeLoad]:
    """The online nodes' loads from the answers of :func:`_queue_load_reads` (``window``
    filled with the pending ids read)."""
    answers = list(answers)
    if window is not None:
        window[:] = [m.decode() if isinstance(m, bytes) else m for m in answers.pop(0)]
    values, *replies = answers
    beats, worker_loads = values[:len(names)], values[len(names):]
    loads = []
    for i, name in enumerate(names):
        raw_beat, raw_load = beats[i], worker_loads[i]
        running, queued, carried = replies[3 * i:3 * i + 3]
        if not raw_beat:  # its heartbeat expired: offline
            continue
        beat = _beat(raw_beat)
        # The worker's own load (published every second) carries a `dmg scale` sooner
        # than the heartbeat; the heartbeat's limit is the fallback.
        worker_limit = _worker_limit(raw_load) if raw_load else 0
        loads.append(NodeLoad(
            name=name, limit=worker_limit or beat.limit, running=int(running), queued=int(queued),
            online=True, draining=beat.draining or name in drained,
            unreachable_stores=beat.unreachable_stores, stale_credentials=beat.stale_credentials,
            version=beat.version, carried=min(int(carried), int(queued)), carries=beat.carries))
    return loads


@dataclass(frozen=True)
class _Beat:
    """What placement reads of a node's heartbeat."""

    limit: int
    draining: bool
    unreachable_stores: frozenset[str]
    stale_credentials: frozenset[str]
    version: str
    carries: int = 0


# A heartbeat and a worker load change every second or so, and every placement round reads
# them: each distinct value is parsed once (a round may come every few milliseconds).
@functools.lru_cache(maxsize=64)
def _beat(raw: bytes | str) -> _Beat:
    beat = json.loads(raw)
    return _Beat(limit=int(beat.get("limit") or 0),
                 # An Inactive node (the cloud's word, repeated in its beat) gets no work either.
                 draining=bool(beat.get("draining") or beat.get("inactive")),
                 unreachable_stores=frozenset(beat.get("stores_unreachable") or ()),
                 stale_credentials=frozenset(beat.get("credentials_stale") or ()),
                 version=str(beat.get("version") or ""),
                 carries=int(beat.get(PACKED_CAPABILITY) or 0))


@functools.lru_cache(maxsize=64)
def _worker_limit(raw: bytes | str) -> int:
    """The limit a worker's published load gives (0: none)."""
    worker = json.loads(raw)
    return int(worker["limit"]) if worker and worker.get("limit") else 0


def backlog_reason(loads: list[NodeLoad]) -> str:
    """Why no node can take a shard now, in words: nobody is online, every online node is
    drained, none has a worker pool (a site coming back), or every one is full."""
    if not loads:
        return NO_NODE_ONLINE
    undrained = [n for n in loads if not n.draining]
    if not undrained:
        return ALL_NODES_DRAINED
    if all(n.limit <= 0 for n in undrained):
        return NO_POOL_RUNNING
    return ALL_NODES_BUSY


def stores_of(spec: ShardSpec | ShardStores | None) -> list[str]:
    """The names of the stores a shard reads and writes (none for an unreadable spec)."""
    return spec.store_names if spec is not None else []


def _pending_shard(shard_id: str, fields: list[Any]) -> PendingShard | None:
    """A shard as placement needs it from its hash's fields (None: no spec)."""
    spec, node, attempt, reason, at, unsent = fields
    if spec is None:
        return None
    return PendingShard(read_stores(shard_id, spec), _text(node), int(attempt or 0), _text(reason),
                        float(at) if at else None, int(unsent) if unsent else None)


def read_stores(shard_id: str, raw: str | bytes | dict[str, Any]) -> ShardStores | None:
    """The stores of the shard's spec as stored in Redis, its entries not read (what placement
    needs; :class:`dmg.shards.ShardStores`); None, logged, when they cannot be read."""
    try:
        return ShardStores.from_json(json.loads(raw) if isinstance(raw, str | bytes) else raw)
    except (DmgError, ValueError) as exc:
        log.warning("shard spec unreadable; placed without store checks shard=%s error=%s", shard_id, exc)
        return None


def credentials_of(spec: ShardSpec | ShardStores | None) -> list[str]:
    """The credentials (by name) the stores of a shard take from the site (none for an
    unreadable spec, or stores that need none)."""
    if spec is None:
        return []
    try:
        return sorted({entry_name(s) for s in (spec.source_store, spec.sink_store) if needs_credential(s)})
    except DmgError:
        return []


def _unreachable_reason(loads: list[NodeLoad], stores: list[str], max_queued: int,
                        credentials: Sequence[str] = ()) -> str:
    with_room = [n for n in loads if n.can_take((), max_queued=max_queued)]
    blocked = sorted({s for n in with_room for s in n.unreachable_stores if s in stores})
    stale = sorted({c for n in with_room for c in n.stale_credentials if c in credentials})
    if stale and not blocked:
        return (f"the nodes with room lack the current version of credential(s) {', '.join(stale)} "
                "(`dmg credentials list` shows who holds which)")
    return f"the nodes with room cannot reach store(s) {', '.join(blocked or stores)}"


class Placer:
    """Places pending shards; remembers since when and why each shard waited."""

    def __init__(self, *, state: SiteState, sender: TaskSender, cloud: ShardReports | None,
                 holding: Callable[[], bool], max_queued: int,
                 clock: Callable[[], float] = time.time,
                 epoch: Callable[[], int | None] = lambda: None,
                 messages: ShardMessages | None = None, fresh: FreshShards | None = None,
                 max_carried: int = 0) -> None:
        self.state = state
        #: The most shards one message may carry (0 or 1: one shard per message, always).
        self.max_carried = max_carried if messages is not None else 0
        self.messages = messages
        # Only the one-step placement checks a shard is as known (dispatcher.fresh).
        self.fresh = fresh if messages is not None else None
        self.epoch = epoch
        self.sender = sender
        self.cloud = cloud
        self.holding = holding
        self.max_queued = max_queued
        self.clock = clock
        self._waiting: dict[str, tuple[float, str]] = {}  # shard id -> (since, reason)
        self._noted_backlog = 0  # pending entries when the whole backlog was last noted
        self._noted_reason = ""
        self._nodes: list[str] = []  # the node names the last round read (its loads ride with them)

    def wait_reason(self, shard_id: str) -> str:
        return self._waiting.get(shard_id, (0.0, ""))[1]

    def place_pending(self, *, woken: bool = True) -> list[Placement]:
        """One placement round; returns the shards placed. ``woken``: the round follows a
        wake-up (work is likely): the pending count rides with the load's first read; a
        round after a quiet interval asks for the count alone first (one command when idle).

        The backlog is read in windows of at most :data:`WINDOW` entries, no larger
        than the room the nodes have: a round costs the same with 10 or 10,000
        shards pending.
        """
        key = self.state.keys.pending
        if not self.holding() or (not woken and not self.state.redis.llen(key)):
            return []
        first: list[str] = []  # the first window, read with the loads
        pending, loads = _site_load(self.state, count_pending=True, window=first, known=self._nodes)
        if not pending:
            return []
        # The whole list as the round began when the first window holds it all: the backlog is
        # noted from it (less what the round takes off) without reading it again.
        whole = list(first) if pending <= len(first) else None
        gone: set[str] = set()  # entries this round placed or dropped
        placed: list[Placement] = []
        start = 0  # entries before this index stay pending this round
        seen: set[str] = set()
        fresh: set[str] = set()  # the shards of this round taken as known fresh (dispatcher.fresh)
        while True:
            # No more entries than the nodes can take (a few more: some may be skipped).
            room = sum(max(n.free_slots + self.max_queued, 0) for n in loads
                       if n.can_take((), max_queued=self.max_queued))
            if not room:
                self._note_backlog(backlog_reason(loads), whole=_left(whole, gone))
                return placed
            # (A message may carry several small shards: dispatcher.packing.)
            size = min(WINDOW, room * self._carry(loads) + 4)
            if start == 0 and first:  # the list as the round began (the loads' own read)
                window, first = first[:size], []
            else:
                window = [m.decode() if isinstance(m, bytes) else m
                          for m in self.state.redis.lrange(key, start, start + size - 1)]
            if not window:
                self._noted_backlog = 0  # nothing waits for room: note the whole backlog next time
                return placed
            shards: dict[str, PendingShard | list[Any]] = {}
            removed = 0
            for index, shard_id in enumerate(window):
                if not any(n.can_take((), max_queued=self.max_queued) for n in loads):
                    self._note_backlog(backlog_reason(loads), whole=_left(whole, gone))
                    return placed
                if not self.holding():
                    log.warning("lease lost; placement stopped")
                    return placed
                if shard_id in seen:  # a duplicate entry, or the list moved under us
                    continue
                seen.add(shard_id)
                if shard_id not in shards:
                    # No more shards read than the nodes can still take: the window's slack
                    # is read only when an entry is skipped (each read is a Redis command).
                    room_left = sum(max(n.free_slots + self.max_queued, 0) for n in loads
                                    if n.can_take((), max_queued=self.max_queued))
                    wanted = window[index:index + max(room_left, 1) * max(self._carry(loads), 1)]
                    known = self._known_fresh(wanted)
                    fresh.update(known)
                    shards.update(known)
                    unknown = [s for s in wanted if s not in known]
                    if unknown:
                        shards.update(self._read_shards(unknown))
                entry = shards[shard_id]
                shard = entry if isinstance(entry, PendingShard) else _pending_shard(shard_id, entry)
                if shard is None:
                    log.warning("pending shard %s has no spec; dropped", shard_id)
                    self.state.drop_pending(shard_id)
                    gone.add(shard_id)
                    removed += 1
                    continue
                if shard.node:
                    log.info("pending shard already placed; entry dropped shard=%s node=%s attempt=%d",
                             shard_id, shard.node, shard.attempt)
                    self.state.drop_pending(shard_id)
                    gone.add(shard_id)
                    removed += 1
                    continue
                stores, credentials = stores_of(shard.spec), credentials_of(shard.spec)
                node = choose_node(loads, stores=stores, max_queued=self.max_queued, credentials=credentials,
                                   prefer_version=__version__)
                if node is None:
                    why = _unreachable_reason(loads, stores, self.max_queued, credentials)
                    self._note_wait([shard_id], why)
                    continue
                size = pack_size(shard.spec, node, loads, backlog=pending - len(gone),
                                 max_queued=self.max_queued, max_carried=self.max_carried)
                if size > 1 and self.messages is not None:
                    riders = self._riders(node, window[index + 1:], shards, seen, size - 1)
                    if riders:
                        carried = self._place_packed(node, [(shard_id, shard), *riders], self.messages)
                        if carried is None:
                            log.warning("a newer dispatcher holds the lease; placement stopped")
                            return placed
                        placed += carried
                        gone.update(p.shard_id for p in carried)
                        removed += len(carried)
                        continue
                placement = self._place(shard_id, node, shard)
                if placement is None:
                    log.warning("a newer dispatcher holds the lease; placement stopped")
                    return placed
                if placement is False:
                    if shard_id in fresh and self.fresh is not None:
                        self.fresh.forget(shard_id)  # not as planned any more: read it next round
                    continue
                assert isinstance(placement, Placement)
                placed.append(placement)
                gone.add(shard_id)
                removed += 1
            start += len(window) - removed

    def _carry(self, loads: list[NodeLoad]) -> int:
        """The most shards a message of this round may carry (1: none packed)."""
        return max([min(n.carries, self.max_carried) for n in loads] + [1])

    def _riders(self, node: NodeLoad, after: list[str], shards: dict[str, PendingShard | list[Any]],
                seen: set[str], wanted: int) -> list[tuple[str, PendingShard]]:
        """Up to ``wanted`` pending shards of ``after`` (read already) that may ride with a shard
        placed on ``node``: small, on no node, their stores and credentials fit ``node``. Each
        one taken is marked ``seen`` (this round does not look at it again)."""
        riders: list[tuple[str, PendingShard]] = []
        for shard_id in after:
            if len(riders) >= wanted:
                break
            entry = shards.get(shard_id)
            if shard_id in seen or entry is None:
                continue
            shard = entry if isinstance(entry, PendingShard) else _pending_shard(shard_id, entry)
            if shard is None or shard.node or shard.spec is None or not shard.spec.small:
                continue
            if (node.unreachable_stores.intersection(stores_of(shard.spec))
                    or node.stale_credentials.intersection(credentials_of(shard.spec))):
                continue
            seen.add(shard_id)
            riders.append((shard_id, shard))
        return riders

    def _place_packed(self, node: NodeLoad, shards: list[tuple[str, PendingShard]],
                      messages: ShardMessages) -> list[Placement] | None:
        """Place ``shards`` on ``node`` in one message (:func:`dmg.site.placing.place_packed`); a
        shard that changed since it was read is left out (the next round reads it) and the others
        go. The placements made; None when a newer dispatcher holds the lease."""
        epoch = self.epoch()
        while shards:
            placements = [self._placement(shard_id, node, shard, next_attempt(shard.attempt, shard.unsent))
                          for shard_id, shard in shards]
            entries = [(p.shard_id, p.attempt,
                        self.cloud.entry(p.shard_id, placed_report(p, epoch=epoch))
                        if isinstance(self.cloud, PlacementOutbox) else "") for p in placements]
            if len(shards) == 1:  # the others changed: this one goes as usual
                one = self._place_in_one_step(shards[0][0], node, shards[0][1], messages)
                return None if one is None else [one] if isinstance(one, Placement) else []
            built = messages.build_packed([(p.shard_id, p.attempt) for p in placements], node=node.name,
                                          epoch=epoch)
            answer = place_packed(self.state, node.name, entries, epoch=epoch, queue_key=built.queue_key,
                                  message=built.message, event_channel=built.event_channel, event=built.event)
            if answer == SUPERSEDED:
                return None
            if answer < 0:
                changed = shards.pop(-answer - 1)[0]
                log.info("pending shard changed before its placement; left for the next round shard=%s",
                         changed)
                if self.fresh is not None:
                    self.fresh.forget(changed)
                continue
            if isinstance(self.cloud, PlacementOutbox):
                self.cloud.noted()
            if self.fresh is not None:
                self.fresh.forget(*(p.shard_id for p in placements))
            record_placement(node, shards=len(placements))
            for placement in placements:
                self._noted_backlog -= 1
                self._waiting.pop(placement.shard_id, None)
            log.info("shards placed in one message shards=%s node=%s attempts=%s free_slots=%d",
                     ",".join(p.shard_id for p in placements), node.name,
                     ",".join(str(p.attempt) for p in placements), node.free_slots)
            return placements
        return []

    def _known_fresh(self, shard_ids: list[str]) -> dict[str, PendingShard]:
        """The shards among ``shard_ids`` this dispatcher planned and has not placed, as their
        plan left them (attempt 0, no node), without a read (:mod:`dispatcher.fresh`)."""
        if self.fresh is None:
            return {}
        known = self.fresh.known(shard_ids)
        return {shard_id: PendingShard(stores, "", 0) for shard_id, stores in known.items()}

    def _read_shards(self, shard_ids: list[str]) -> dict[str, list[Any]]:
        """Each shard's fields as placement needs them, in one round trip (read into a
        :class:`PendingShard` when its turn comes: the first shard of a large plan leaves
        before the specs of the others are read)."""
        pipe = self.state.redis.pipeline(transaction=False)
        for shard_id in shard_ids:
            pipe.hmget(self.state.keys.shard(shard_id), "spec", "node", "attempt", "ended_reason",
                       "ended_at", "unsent")
        return dict(zip(shard_ids, pipe.execute(), strict=True))

    def _note_backlog(self, reason: str, *, whole: list[str] | None = None) -> None:
        """Note ``reason`` for every pending shard without one. ``whole``: the pending list
        as the round read it whole, less what it placed or dropped (no read then: an entry
        appended since is noted by the next round that finds no room). Otherwise the whole
        backlog is read only when the reason changed, or the list shrank under us (a cancel);
        else only the entries appended since it was last noted (new work joins the tail), in
        the same round trip as its length."""
        if whole is not None:
            self._note_wait(whole, reason)
            self._noted_backlog, self._noted_reason = len(whole), reason
            return
        key = self.state.keys.pending
        if reason == self._noted_reason and self._noted_backlog > 0:
            pipe = self.state.redis.pipeline(transaction=False)
            pipe.llen(key)
            pipe.lrange(key, self._noted_backlog, -1)
            length, tail = pipe.execute()
            if int(length) >= self._noted_backlog:
                self._note_wait([_text(m) for m in tail], reason)
                self._noted_backlog = int(length)
                return
        backlog = self.state.pending()
        self._note_wait(backlog, reason)
        self._noted_backlog, self._noted_reason = len(backlog), reason

    def _place(self, shard_id: str, node: NodeLoad, shard: PendingShard) -> Placement | bool | None:
        """Place one shard: the placement; None when a newer dispatcher holds the lease (stop);
        False when the shard changed since it was read (left for the next round)."""
        if self.messages is not None:
            return self._place_in_one_step(shard_id, node, shard, self.messages)
        epoch = self.epoch()
        attempt = self.state.new_attempt(shard_id, node.name, epoch=epoch)
        if not attempt:
            return None
        placement = self._placement(shard_id, node, shard, attempt)
        try:
            # The placement report is recorded (in Redis: dispatcher.reports) before the message
            # goes out: a worker never runs an attempt whose placement the cloud cannot learn.
            self._report(placement)
            self.send(shard_id, node.name, attempt, epoch=epoch)
        except Exception:
            # No message went out: hand the shard back to pending rather than strand it.
            requeue(self.state, shard_id, node.name, epoch=epoch, reason=NOT_SENT)
            raise
        self.state.drop_pending(shard_id)
        self._placed(placement, node)
        return placement

    def _placement(self, shard_id: str, node: NodeLoad, shard: PendingShard, attempt: int) -> Placement:
        _since, reason = self._waiting.get(shard_id, (0.0, ""))
        return Placement(shard_id, node.name, attempt, reason, placed_at=self.clock(),
                         previous_ended=shard.ended_reason if attempt > 1 else "",
                         previous_ended_at=shard.ended_at if attempt > 1 else None)

    def _placed(self, placement: Placement, node: NodeLoad) -> None:
        self._noted_backlog -= 1
        record_placement(node)
        self._waiting.pop(placement.shard_id, None)
        log.info("shard placed shard=%s node=%s attempt=%d free_slots=%d wait_reason=%s",
                 placement.shard_id, node.name, placement.attempt, node.free_slots,
                 placement.wait_reason or "-")

    def _place_in_one_step(self, shard_id: str, node: NodeLoad, shard: PendingShard,
                           messages: ShardMessages) -> Placement | bool | None:
        """Attempt, report, pending entry and message in one script (:mod:`dmg.site.placing`);
        a BrokerError leaves either all of it done or none (the next round sees which)."""
        epoch = self.epoch()
        attempt = next_attempt(shard.attempt, shard.unsent)
        placement = self._placement(shard_id, node, shard, attempt)
        entry = (self.cloud.entry(shard_id, placed_report(placement, epoch=epoch))
                 if isinstance(self.cloud, PlacementOutbox) else "")
        built = messages.build(shard_id, attempt, node=node.name, epoch=epoch)
        answer = place_shard(self.state, shard_id, node.name, attempt=attempt, epoch=epoch,
                             report_entry=entry, queue_key=built.queue_key, message=built.message,
                             event_channel=built.event_channel, event=built.event)
        if answer == SUPERSEDED:
            return None
        if answer != attempt:
            log.info("pending shard changed before its placement; left for the next round shard=%s",
                     shard_id)
            return False
        if isinstance(self.cloud, PlacementOutbox):
            self.cloud.noted()
        if self.fresh is not None:
            self.fresh.forget(shard_id)
        self._placed(placement, node)
        return placement

    def send(self, shard_id: str, node: str, attempt: int, *, epoch: int | None) -> None:
        """Send the message of ``attempt`` (already recorded) to ``node``'s queue."""
        kwargs = {"epoch": epoch} if epoch is not None else None
        self.sender.send_task(COPY_SHARD, args=[shard_id, attempt], kwargs=kwargs, queue=node_queue(node),
                              task_id=copy_task_id(shard_id, attempt))

    def reissue(self, shard_id: str, node: str, attempt: int, *, epoch: int) -> None:
        """Report placed, then send, a re-issued attempt (:func:`dmg.site.attempts.reissue`)."""
        self._report(Placement(shard_id, node, attempt, REISSUED, previous_ended=REISSUED,
                               previous_ended_at=self.clock(), placed_at=self.clock()))
        self.send(shard_id, node, attempt, epoch=epoch)

    def _note_wait(self, shard_ids: list[str], reason: str) -> None:
        """Remember since when and why each shard waits: the first reason, unless a reason
        saying the whole site cannot work (:data:`SITE_DOWN`) comes after a "busy" one."""
        now = self.clock()
        for shard_id in shard_ids:
            noted = self._waiting.get(shard_id)
            if noted is None:
                self._waiting[shard_id] = (now, reason)
            elif reason in SITE_DOWN and noted[1] == ALL_NODES_BUSY:
                self._waiting[shard_id] = (noted[0], reason)

    def confirm(self, shard_id: str, node: str, attempt: int) -> None:
        """Tell the cloud again that ``attempt`` of a running shard is on ``node`` (a new
        dispatcher does, in case its predecessor's ``placed`` report never reached the
        cloud: the cloud accepts a worker's report only from the node its attempt was
        placed on)."""
        if self.cloud is None:
            return
        report: dict[str, Any] = {"attempt": attempt, "node": node, "status": CLOUD_PLACED}
        epoch = self.epoch()
        if epoch:
            report["epoch"] = epoch
        try:
            self.cloud.report_shard(shard_id, report)
        except DmgError as exc:
            log.warning("placement not confirmed to the cloud shard=%s error=%s", shard_id, exc)

    def _report(self, placement: Placement) -> None:
        """Record the ``placed`` report (raises BrokerError when Redis cannot take it)."""
        if self.cloud is None:
            return
        try:
            self.cloud.report_shard(placement.shard_id, placed_report(placement, epoch=self.epoch()))
        except DmgError as exc:
            log.warning("placement not reported to the cloud shard=%s error=%s", placement.shard_id, exc)


def placed_report(placement: Placement, *, epoch: int | None = None) -> dict[str, Any]:
    """The ``placed`` report of a placement (:class:`dmg.cloud.schemas.ShardReport`); ``epoch``
    is the dispatcher's lease epoch, by which the cloud knows the report is its dispatcher's."""
    report: dict[str, Any] = {"attempt": placement.attempt, "node": placement.node, "status": CLOUD_PLACED,
                              "wait_reason": placement.wait_reason}
    if epoch:
        report["epoch"] = epoch
    if placement.placed_at is not None:
        report["placed_at"] = placement.placed_at
    if placement.previous_ended:
        report["previous_ended"] = placement.previous_ended
        if placement.previous_ended_at is not None:
            report["previous_ended_at"] = placement.previous_ended_at
    return report


def _left(whole: list[str] | None, gone: set[str]) -> list[str] | None:
    """The entries of ``whole`` not in ``gone`` (None: the list was not read whole)."""
    return None if whole is None else [shard_id for shard_id in whole if shard_id not in gone]


def _text(raw: Any) -> str:
    return (raw.decode() if isinstance(raw, bytes) else raw) or ""
