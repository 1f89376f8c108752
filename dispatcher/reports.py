"""Placement reports sent to the cloud off the placement path.

A ``placed`` report tells the cloud where a shard went and why it waited; nothing
depends on it arriving before the worker starts (the cloud ignores a report that
would move a shard's status backwards). :class:`BackgroundReports` queues them and
one thread sends them in order, so a cloud round-trip never slows placement.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Protocol

from dmg.errors import DmgError

log = logging.getLogger(__name__)


class ShardReports(Protocol):
    def report_shard(self, shard_id: str, report: dict[str, Any]) -> None: ...


class BackgroundReports:
    """``report_shard`` that returns at once; a thread delivers to ``cloud``."""

    def __init__(self, cloud: ShardReports, *, max_queued: int = 100_000) -> None:
        self.cloud = cloud
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(max_queued)
        self._thread = threading.Thread(target=self._deliver, name="dmg-placement-reports", daemon=True)
        self._thread.start()

    def report_shard(self, shard_id: str, report: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait((shard_id, report))
        except queue.Full:
            log.warning("placement report dropped (queue full) shard=%s", shard_id)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (up to ``timeout`` s), then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _deliver(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            shard_id, report = item
            try:
                self.cloud.report_shard(shard_id, report)
            except DmgError as exc:
                log.warning("placement not reported to the cloud shard=%s error=%s", shard_id, exc)
