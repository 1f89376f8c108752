"""The fencing check before a commit, shared by a shard's file threads.

Each file asks "is my attempt still current?" after its bytes are staged and
before it commits. :class:`SharedCheck` answers every file that asks while a
check is under way with the *next* check, never with one that began before the
file asked: exactly as strict as one check per file, with one round trip for
all the files that became ready together.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class SharedCheck:
    """Wraps ``check`` (thread-safe); see the module docstring."""

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
