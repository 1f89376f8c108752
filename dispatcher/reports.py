"""Placement reports sent to the cloud off the placement path.

A ``placed`` report tells the cloud where a shard went and why it waited; nothing
depends on it arriving before the worker starts (the cloud ignores a report that
would move a shard's status backwards). :class:`BackgroundReports` queues them and
one thread sends them in order, so a cloud round-trip never slows placement.

While the cloud is unreachable (Retryable) the thread retries the report at the
head of the queue with backoff until it is delivered, keeping the order; placement
goes on meanwhile. The queue lives in the dispatcher's memory: reports still queued
when its process stops are lost, which costs the cloud only the "placed" step and
the wait reason (the worker's own reports name the node and attempt).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Protocol

from dmg.errors import DmgError, Retryable

log = logging.getLogger(__name__)


class ShardReports(Protocol):
    def report_shard(self, shard_id: str, report: dict[str, Any]) -> None: ...


class BackgroundReports:
    """``report_shard`` that returns at once; a thread delivers to ``cloud``."""

    def __init__(self, cloud: ShardReports, *, max_queued: int = 100_000, backoff: float = 0.5,
                 max_backoff: float = 5.0) -> None:
        self.cloud = cloud
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._closing = threading.Event()
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(max_queued)
        self._thread = threading.Thread(target=self._deliver, name="dmg-placement-reports", daemon=True)
        self._thread.start()

    def report_shard(self, shard_id: str, report: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait((shard_id, report))
        except queue.Full:
            log.warning("placement report dropped (queue full) shard=%s", shard_id)

    def pending(self) -> int:
        """Reports not delivered yet (about)."""
        return self._queue.qsize()

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (up to ``timeout`` s), then stop the thread; what the
        cloud has not taken by then is dropped."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._closing.set()
            self._thread.join(1.0)

    def _deliver(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._deliver_one(*item)

    def _deliver_one(self, shard_id: str, report: dict[str, Any]) -> None:
        delay = self.backoff
        tries = 0
        while True:
            try:
                self.cloud.report_shard(shard_id, report)
            except Retryable as exc:
                tries += 1
                if tries == 1:
                    log.warning("cloud unreachable, placement reports wait shard=%s error=%s", shard_id, exc)
                if self._closing.wait(delay):
                    log.warning("placement report dropped at shutdown shard=%s", shard_id)
                    return
                delay = min(delay * 2, self.max_backoff)
                continue
            except DmgError as exc:
                log.warning("placement not reported to the cloud shard=%s error=%s", shard_id, exc)
                return
            if tries:
                log.info("placement reports delivered again after %d tries shard=%s", tries, shard_id)
            return
