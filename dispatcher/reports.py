"""Placement reports sent to the cloud off the placement path, in batches.

A ``placed`` report tells the cloud where a shard went and why it waited; nothing
depends on it arriving before the worker starts (the cloud ignores a report that
would move a shard's status backwards). :class:`BackgroundReports` queues them and
one thread sends them in order, so a cloud round-trip never slows placement: all
the reports queued while a request was in flight go in the next request
(``POST /nodes/reports``, at most :data:`BATCH` a request); to a cloud of the
previous version (no batch route), one request per report.

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
from typing import Any, Protocol, runtime_checkable

from dmg.errors import DmgError, NotFound, Retryable

log = logging.getLogger(__name__)


#: Placement reports one request carries at most.
BATCH = 500


class ShardReports(Protocol):
    def report_shard(self, shard_id: str, report: dict[str, Any]) -> None: ...


@runtime_checkable
class _Batching(Protocol):
    def report_batch(self, items: list[dict[str, Any]]) -> dict[str, Any]: ...


class BackgroundReports:
    """``report_shard`` that returns at once; a thread delivers to ``cloud``."""

    def __init__(self, cloud: ShardReports, *, max_queued: int = 100_000, backoff: float = 0.5,
                 max_backoff: float = 5.0, linger: float = 0.05) -> None:
        self.cloud = cloud
        self.linger = linger
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._closing = threading.Event()
        self._single = False
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
            # Let the placements of this round gather: one request carries them all.
            self._closing.wait(self.linger)
            batch = [item]
            closing = False
            while len(batch) < BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    closing = True
                    break
                batch.append(more)
            self._deliver_batch(batch)
            if closing:
                return

    def _deliver_batch(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        """Deliver ``batch`` in order: in batch requests while the cloud takes them, else
        one by one. Retries while the cloud is away (or asks for the rest again)."""
        sender = self.cloud if isinstance(self.cloud, _Batching) and not self._single else None
        delay = self.backoff
        tries = 0
        while batch and sender is not None:
            try:
                answer = sender.report_batch([{"shard_id": s, "report": r} for s, r in batch])
            except Retryable as exc:
                tries += 1
                if tries == 1:
                    log.warning("cloud unreachable, placement reports wait shards=%d error=%s",
                                len(batch), exc)
                if self._closing.wait(delay):
                    log.warning("placement reports dropped at shutdown shards=%d", len(batch))
                    return
                delay = min(delay * 2, self.max_backoff)
                continue
            except NotFound:
                self._single = True  # a cloud of the previous version: one request per report
                break
            except DmgError as exc:
                log.warning("placement batch refused (%s); sending its reports one by one", exc)
                break
            applied = int(answer.get("applied", 0))
            for result in answer.get("results", [])[:applied]:
                if not result.get("ok"):
                    log.warning("placement not reported to the cloud shard=%s error=%s",
                                result.get("shard_id"), result.get("message"))
            batch = batch[applied:]
            if batch and self._closing.wait(delay):
                return
        if tries and not batch:
            log.info("placement reports delivered again after %d tries", tries)
        for shard_id, report in batch:
            self._deliver_one(shard_id, report)

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
