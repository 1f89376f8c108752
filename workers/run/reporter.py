"""How a worker tells the cloud about a shard: the :class:`Reporter` protocol.

A report is ``{attempt, node, status: running|succeeded|failed, files, bytes,
files_total, bytes_total, started_at, ended_at, error}`` (times in POSIX seconds).

- :class:`HttpReporter` sends it with :class:`dmg.cloud.client.CloudClient`,
  retrying a :class:`~dmg.errors.Retryable` failure a few times with backoff.
- :class:`MemoryReporter` keeps reports in memory (tests, embedded tools).
- :class:`workers.run.outbox.OutboxReporter` keeps what could not be delivered in
  Redis until the node agent delivers it.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from dmg.errors import Retryable

log = logging.getLogger(__name__)


class Reporter(Protocol):
    def report_shard(self, shard_id: str, report: dict[str, Any]) -> None:
        """Deliver one report; raises :mod:`dmg.errors` (Retryable when the cloud is away)."""


#: Where a final report goes within the attempt's last step: ``(outbox list, its wake-up
#: list, the entry's JSON)`` (:func:`dmg.site.attempts.finish_run`).
OutboxEntry = tuple[str, str, str]


@runtime_checkable
class FinalInOutbox(Protocol):
    """A reporter that can hand an attempt's final report over as an outbox entry, to be
    queued in the same Redis step that marks the attempt finished
    (:func:`workers.run.attempt.finish`)."""

    def final_entry(self, shard_id: str, report: dict[str, Any]) -> OutboxEntry | None:
        """The outbox entry of ``report`` (the caller queues it, or falls back to
        :meth:`Reporter.report_shard`); None: send it with ``report_shard`` instead."""
        ...

    def flush(self) -> None:
        """A final report was queued behind others (its shard streamed file results): ask
        the node's sender to send what is queued now. Best effort: never raises."""
        ...


class ShardReportClient(Protocol):
    """The part of :class:`dmg.cloud.client.CloudClient` a reporter uses."""

    def report_shard(self, shard_id: str, report: dict[str, Any]) -> None: ...


class HttpReporter:
    """Reports over the cloud's REST API; retries Retryable ``attempts`` times in all.

    Waits ``backoff``, ``2 * backoff``, ... between tries, then raises the last
    Retryable. Any other :class:`~dmg.errors.DmgError` (StaleAttempt, NotFound,
    Unauthorized) is raised at once: retrying will not help.
    """

    def __init__(self, client: ShardReportClient, *, attempts: int = 3, backoff: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.client = client
        self.attempts = attempts
        self.backoff = backoff
        self._sleep = sleep

    def report_shard(self, shard_id: str, report: dict[str, Any]) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                self.client.report_shard(shard_id, report)
                return
            except Retryable as exc:
                if attempt == self.attempts:
                    raise
                delay = self.backoff * 2 ** (attempt - 1)
                log.info("shard report not delivered shard=%s try=%d error=%s; retrying in %.1f s",
                         shard_id, attempt, exc, delay)
                self._sleep(delay)


class MemoryReporter:
    """Keeps every report in :attr:`reports` as ``(shard_id, report)``, in order.

    ``on_report`` (optional) runs after each report is recorded, in the caller's thread.
    """

    def __init__(self, on_report: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.reports: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._on_report = on_report

    def report_shard(self, shard_id: str, report: dict[str, Any]) -> None:
        with self._lock:
            self.reports.append((shard_id, dict(report)))
        if self._on_report is not None:
            self._on_report(shard_id, report)

    def statuses(self, shard_id: str) -> list[str]:
        """The statuses reported for ``shard_id``, in order."""
        with self._lock:
            return [str(r["status"]) for s, r in self.reports if s == shard_id]


#: A shard that ends within this many seconds of its start sends only its final report.
SHORT_SHARD = 1.0
#: The releaser wakes at most this often (s): a held report goes out at most that much after
#: its delay, and a pool process running 50 short shards a second is not woken 50 times.
RELEASE_TICK = 0.1


class ShortShardReporter:
    """Holds each attempt's first ``running`` report (one without file results) for
    ``delay`` s: when a later report of the same attempt comes first (the shard ended,
    or reported progress), the held one is dropped, since the later one carries
    everything it said (``started_at`` included). Otherwise it goes to ``inner`` when
    the delay ends. Reports keep their order per attempt.

    One releaser thread per process (started with the first held report, again after a
    fork) sends the held reports that came due: holding a report starts no thread."""

    def __init__(self, inner: Reporter, *, delay: float = SHORT_SHARD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.delay = delay
        self._clock = clock
        self._lock = threading.Condition()
        self._held: dict[tuple[str, int], tuple[float, str, dict[str, Any]]] = {}
        self._due: list[tuple[float, tuple[str, int]]] = []  # a heap of (due, key)
        self._releaser_pid = 0

    def report_shard(self, shard_id: str, report: dict[str, Any]) -> None:
        key = (shard_id, int(report.get("attempt", 0)))
        with self._lock:
            if self._held.pop(key, None) is None and report.get("status") == "running" \
                    and not report.get("file_results"):
                due = self._clock() + self.delay
                self._held[key] = (due, shard_id, report)
                heapq.heappush(self._due, (due, key))
                self._ensure_releaser()
                if self._due[0][1] == key:  # else the releaser already waits for an earlier one
                    self._lock.notify()
                return
            # Sent under the lock: a held report being released goes first.
            self.inner.report_shard(shard_id, report)

    def final_entry(self, shard_id: str, report: dict[str, Any]) -> OutboxEntry | None:
        """Drops the attempt's held report (the final one says everything it said) and
        asks ``inner`` (:class:`FinalInOutbox`) for the final report's outbox entry."""
        if not isinstance(self.inner, FinalInOutbox):
            return None
        with self._lock:
            self._held.pop((shard_id, int(report.get("attempt", 0))), None)
            return self.inner.final_entry(shard_id, report)

    def flush(self) -> None:
        if isinstance(self.inner, FinalInOutbox):
            self.inner.flush()

    def held(self) -> int:
        """Reports held now."""
        with self._lock:
            return len(self._held)

    def _ensure_releaser(self) -> None:
        pid = os.getpid()
        if self._releaser_pid != pid:  # none yet, or it stayed in the parent of a fork
            self._releaser_pid = pid
            threading.Thread(target=self._release_due, name="held-reports", daemon=True).start()

    def _release_due(self) -> None:
        with self._lock:
            while True:
                now = self._clock()
                while self._due and self._due[0][0] <= now:
                    due, key = heapq.heappop(self._due)
                    held = self._held.get(key)
                    if held is None or held[0] != due:
                        continue  # superseded meanwhile (or held again later)
                    del self._held[key]
                    try:
                        self.inner.report_shard(held[1], held[2])
                    except Exception:  # a reporter that raises must not stop the releaser
                        log.exception("held running report not sent shard=%s", held[1])
                self._lock.wait(None if not self._due else max(RELEASE_TICK, self._due[0][0] - now))
