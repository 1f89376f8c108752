"""A bandwidth limit (bytes/s) that may change while a copy runs.

A :class:`Throttle` asks its :class:`BandwidthControl` for the current limit at
most every ``refresh`` seconds and, while a limit is set, reserves each chunk's
bytes before they move. Reservations follow GCRA (a virtual schedule): a chunk
of ``n`` bytes starts at ``max(now, tat)`` and pushes ``tat`` by ``n / limit``,
so every thread — or every node, with a shared control — keeps to one rate.

- :class:`LocalBandwidth`: a limit held in this process (tests, tools).
- :class:`dmg.transfer.sitebandwidth.SiteBandwidth`: the limit and the schedule of
  an activity run in the site's Redis, shared by every shard on every node.

The throttle keeps :attr:`Throttle.applied`: the bytes sent under each limit (0
meaning none), the record of what it did.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

#: Seconds of traffic one chunk may reserve at most (smaller chunks when limited).
CHUNK_SECONDS = 0.25
MIN_CHUNK = 4096


class BandwidthControl(Protocol):
    def current_limit(self) -> float:
        """Bytes/s allowed now; 0 means unlimited."""

    def reserve(self, nbytes: int, limit: float) -> float:
        """Book ``nbytes`` at ``limit`` bytes/s; -> seconds to wait before sending them."""


class LocalBandwidth:
    """A limit held in this process; thread-safe. :meth:`set_limit` changes it."""

    def __init__(self, limit: float = 0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = float(limit)
        self._clock = clock
        self._tat = 0.0
        self._lock = threading.Lock()

    def set_limit(self, limit: float) -> None:
        self._limit = float(limit)

    def current_limit(self) -> float:
        return self._limit

    def reserve(self, nbytes: int, limit: float) -> float:
        with self._lock:
            now = self._clock()
            start = max(self._tat, now)
            self._tat = start + nbytes / limit
            return start - now


class Throttle:
    """Paces bytes to the control's current limit; see the module docstring."""

    def __init__(self, control: BandwidthControl, *, refresh: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.control = control
        self.refresh = refresh
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._limit = float(control.current_limit())
        self._read_at = clock()
        self.applied: dict[float, int] = {}
        self.waited = 0.0

    @classmethod
    def fixed(cls, limit: float) -> Throttle:
        return cls(LocalBandwidth(limit))

    def limit(self) -> float:
        """The current limit, re-read from the control at most every ``refresh`` s."""
        now = self._clock()
        with self._lock:
            if now - self._read_at < self.refresh:
                return self._limit
            self._read_at = now
        limit = float(self.control.current_limit())
        with self._lock:
            self._limit = limit
        return limit

    def chunk_size(self, default: int) -> int:
        """How many bytes to move at once: ``default``, smaller under a low limit."""
        limit = self.limit()
        if limit <= 0:
            return default
        return max(MIN_CHUNK, min(default, int(limit * CHUNK_SECONDS)))

    def take(self, nbytes: int) -> None:
        """Wait until ``nbytes`` may move under the current limit (no wait when unlimited)."""
        if nbytes <= 0:
            return
        limit = self.limit()
        if limit > 0:
            wait = self.control.reserve(nbytes, limit)
            if wait > 0:
                self._sleep(wait)
                with self._lock:
                    self.waited += wait
        with self._lock:
            self.applied[limit] = self.applied.get(limit, 0) + nbytes
