"""Retries with exponential backoff, for :class:`~dmg.errors.Retryable` errors only.

Any other error (NotFound, PermissionDenied, a checksum mismatch, StaleAttempt)
is raised at once: trying again would not help.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from dmg.errors import Retryable

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The longest pause between two tries, in seconds.
MAX_BACKOFF = 30.0


def backoff_delays(retries: int, base: float, *, cap: float = MAX_BACKOFF) -> list[float]:
    """The pauses before each retry: ``base``, ``2*base``, ``4*base`` ... capped at ``cap``."""
    return [min(cap, base * 2 ** k) for k in range(retries)]


def call_with_retries(fn: Callable[[int], T], *, retries: int, backoff: float, what: str,
                      sleep: Callable[[float], None] = time.sleep,
                      stop: Callable[[], bool] = lambda: False) -> tuple[T, int]:
    """Call ``fn(try_number)`` (1, 2, ...) until it returns; -> (result, tries used).

    Retries a :class:`Retryable` up to ``retries`` times, pausing between tries;
    re-raises the last one. ``stop()`` true ends the retrying early (the shard is
    being abandoned). Other exceptions propagate at once.
    """
    tries = 0
    while True:
        tries += 1
        try:
            return fn(tries), tries
        except Retryable as exc:
            if tries > retries or stop():
                raise
            delay = backoff_delays(tries, backoff)[-1]  # worked out on failure only: files rarely fail
            log.info("retrying %s in %.1f s (try %d failed: %s)", what, delay, tries, exc)
            sleep(delay)
