"""Waiting for a condition with a deadline: the one poll loop of the test suite.

Tests wait for what they expect to happen (a node Online, a shard elsewhere, a file
on disk) instead of sleeping a fixed time, and fail with what they waited for.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], *, timeout: float = 30.0, what: str = "a condition",
             interval: float = 0.1, tolerate: tuple[type[BaseException], ...] = ()) -> T:
    """Poll ``probe`` until it returns something truthy and return that.

    An exception of a ``tolerate`` type counts as "not yet". AssertionError naming
    ``what`` after ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(*tolerate):
            value = probe()
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def holds_for(check: Callable[[], object], *, seconds: float, interval: float = 0.1) -> None:
    """Call ``check`` every ``interval`` s for ``seconds`` s: it asserts what must stay true
    the whole time (a process alive, a file still absent), not only once."""
    until = time.monotonic() + seconds
    while True:
        check()
        if time.monotonic() >= until:
            return
        time.sleep(interval)
