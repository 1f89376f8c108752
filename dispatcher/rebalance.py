"""Rebalancing: move queued (not running) shards from busy nodes to nodes with free slots.

Placement sends a shard to the node with the most free slots at that moment, and
lets each node hold a short queue (``max_queued_per_node``). A node added later,
or a node that finishes early, can then sit idle while another node's queue
waits. After each placement round, :meth:`Rebalancer.rebalance` moves that wait:

- a node's *excess* is ``queued - max(limit - running, 0)``: the shards queued
  on it that cannot start there until one of its running shards ends;
- a *target* is a node with a free slot (``limit - running - queued > 0``) that
  :func:`dmg.placement.choose_node` accepts (live heartbeat, not draining, holds the
  current version of the shard's credentials, reaches
  the shard's stores), so a moved shard starts at once;
- shards move from the node with the largest excess, newest first (the last in
  its Celery queue), to the target with the most free slots, never more than the
  donor's excess nor the targets' free slots.

A move is one Redis script: it happens only if the shard is still queued on the
donor under the attempt read (a shard the donor started meanwhile stays where it
is) and, with an epoch, only while that epoch is the dispatcher's. It gives the
shard a new attempt on the target (fencing the old one), moves it from
``queued:<donor>`` to ``queued:<target>``, and the message
``dmg.copy_shard(shard, attempt, epoch=...)`` goes to ``node.<target>``. The old
message stays in the donor's Celery queue; when it is delivered,
:func:`dmg.site.attempts.start_run` finds its attempt stale and it does nothing.

Rounds are at least ``interval`` s apart; ``holding()`` is asked before every move.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from dispatcher.placement import (
    Placement,
    Placer,
    credentials_of,
    node_loads,
    placed_report,
    read_stores,
    stores_of,
)
from dmg.attempt_ends import MOVED, NOT_SENT
from dmg.placement import NodeLoad, choose_node, record_placement
from dmg.shards.status import STATE_QUEUED
from dmg.site import scripts
from dmg.site.attempts import requeue
from dmg.site.state import SiteState
from dmg.version import __version__

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Move:
    shard_id: str
    donor: str
    target: str
    attempt: int


def excess(node: NodeLoad) -> int:
    """Shards queued on ``node`` that cannot start there until a running one ends."""
    return node.queued - max(node.limit - node.running, 0)


def move_queued(state: SiteState, shard_id: str, *, donor: str, target: str, attempt: int,
                epoch: int | None = None) -> int:
    """Move ``shard_id`` from ``donor``'s queue to ``target``'s with a new attempt.

    Only if it is still queued on ``donor`` under ``attempt``; returns the new
    attempt, 0 when it is not (started, finished, moved), -1 when ``epoch`` is
    given and no longer the dispatcher's. Atomic (one Redis script); sends nothing.
    """
    script = state.redis.register_script(scripts.MOVE_QUEUED)
    return int(script(keys=[state.keys.shard(shard_id)],
                      args=[state.prefix, shard_id, donor, target, "" if epoch is None else epoch,
                            attempt, STATE_QUEUED]))


class Rebalancer:
    """Moves queued shards toward free slots; see the module docstring.

    Uses ``placer``'s site state, lease (``holding``, ``epoch``), message format
    (:meth:`~dispatcher.placement.Placer.send`) and cloud reports.
    """

    def __init__(self, placer: Placer, *, interval: float = 0.25,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.placer = placer
        self.state = placer.state
        self.holding = placer.holding
        self.epoch = placer.epoch
        self.interval = interval
        self.clock = clock
        self._next = 0.0

    def rebalance(self) -> list[Move]:
        """One round, unless the last one was less than ``interval`` s ago; the moves made."""
        now = self.clock()
        if now < self._next:
            return []
        self._next = now + self.interval
        return self.rebalance_now()

    def rebalance_now(self) -> list[Move]:
        """One round now; returns the moves made."""
        if not self.holding():
            return []
        loads = node_loads(self.state)
        targets = [n for n in loads if n.can_take((), max_queued=0)]
        donors = sorted((n for n in loads if excess(n) > 0), key=lambda n: (-excess(n), n.name))
        if not targets or not donors:
            return []
        moves: list[Move] = []
        for donor in donors:
            # Newest first: the last in the donor's queue waits longest.
            for shard_id in sorted(self.state.queued(donor.name), reverse=True):
                if excess(donor) <= 0 or not any(t.free_slots > 0 for t in targets):
                    break
                if not self.holding():
                    return moves
                move = self._move_one(shard_id, donor, targets)
                if move is None:
                    continue
                if move.attempt < 0:
                    log.warning("rebalance stopped: a newer dispatcher took over")
                    return moves
                moves.append(move)
        return moves

    def _move_one(self, shard_id: str, donor: NodeLoad, targets: list[NodeLoad]) -> Move | None:
        shard = self.state.shard(shard_id)
        if shard is None or shard["node"] != donor.name or shard["state"] != STATE_QUEUED:
            return None
        candidates = [t for t in targets if t.name != donor.name and t.free_slots > 0]
        spec = read_stores(shard_id, shard["spec"])
        target = choose_node(candidates, stores=stores_of(spec), credentials=credentials_of(spec),
                             max_queued=0, prefer_version=__version__)
        if target is None:
            return None
        epoch = self.epoch()
        attempt = move_queued(self.state, shard_id, donor=donor.name, target=target.name,
                              attempt=int(shard["attempt"]), epoch=epoch)
        if attempt == 0:
            return None
        if attempt < 0:
            return Move(shard_id, donor.name, target.name, attempt)
        try:
            # Reported (in Redis) before the message goes out, as every placement is.
            if self.placer.cloud is not None:
                now = self.placer.clock()
                self.placer.cloud.report_shard(shard_id, placed_report(Placement(
                    shard_id, target.name, attempt,
                    f"moved from {donor.name}, where it was queued behind running shards",
                    previous_ended=MOVED, previous_ended_at=now, placed_at=now), epoch=epoch))
            self.placer.send(shard_id, target.name, attempt, epoch=epoch)
        except Exception:
            # No message went out: hand the shard back to pending rather than strand it.
            requeue(self.state, shard_id, target.name, epoch=epoch, reason=NOT_SENT)
            raise
        donor.queued -= 1
        record_placement(target)
        log.info("queued shard moved shard=%s from=%s to=%s attempt=%d", shard_id, donor.name,
                 target.name, attempt)
        return Move(shard_id, donor.name, target.name, attempt)
