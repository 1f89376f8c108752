"""The free slots a plan is cut for, read once for many plans.

Reading the site's load costs three Redis round trips (:func:`dispatcher.placement.node_loads`
and the pending list's length). :class:`FreeSlots` reads it at most once per ``max_age``
seconds for every planner thread together, and takes off the shards queued since (each
plan says how many with :meth:`FreeSlots.used`): the planners of a claimed batch share one
reading, and a plan still sees the room the plans before it took. The count only sizes
shards (:func:`dmg.sharding.cut_for_slots`); placement reads the load afresh each round.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from dispatcher.placement import node_loads
from dmg.site.state import SiteState

#: Seconds a reading serves the planners (a claimed batch is planned within it).
MAX_AGE = 0.5


class FreeSlots:
    """The slots free for new shards (see the module docstring); thread-safe."""

    def __init__(self, state: SiteState, *, max_age: float = MAX_AGE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.state = state
        self.max_age = max_age
        self.clock = clock
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._free = 0  # the eligible nodes' free slots less the pending shards, at the reading
        self._limits = 0  # the eligible nodes' slots

    def free(self) -> int:
        """The eligible nodes' free slots less the shards already pending; all their slots
        when none is free (the plan outlives the moment); at least 1. Raises BrokerError."""
        with self._lock:
            now = self.clock()
            if self._read_at is None or now - self._read_at >= self.max_age:
                nodes = [n for n in node_loads(self.state) if n.online and not n.draining and n.limit > 0]
                pending = int(self.state.redis.llen(self.state.keys.pending))
                self._free = sum(max(n.free_slots, 0) for n in nodes) - pending
                self._limits = sum(n.limit for n in nodes)
                self._read_at = now
            return max(1, self._free if self._free > 0 else self._limits)

    def used(self, shards: int) -> None:
        """``shards`` were queued since the reading."""
        with self._lock:
            self._free -= shards
