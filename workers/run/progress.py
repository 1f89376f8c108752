"""Running progress of a copy shard: counts what the engine did, reports it now and then.

Every report carries ``files``/``bytes`` done (``bytes`` also counts the bytes of
files in flight) and ``files_total``/``bytes_total`` to do: the planned ones minus
the files skipped as already up to date, so progress ends at 100 %. Reports also
carry the file results gathered since the previous one under ``file_results``
(:class:`dmg.transfer.FileResult` JSON plus ``node`` and ``attempt``), which
:meth:`dmg.cloud.client.CloudClient.report_shard` posts to the run's per-file report;
at most :data:`MAX_PENDING_RESULTS` wait at a time. With ``min_pending`` below
``max_pending``, a report goes once as many results wait as half the shard's files still to
come (within those bounds): results leave in reports of about a third of what is left, few
of them on a long shard, and the final report carries fewer than ``min_pending``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from dmg.shards.status import CLOUD_RUNNING
from dmg.transfer import COPIED, SKIPPED, FileResult
from workers.run.reporter import Reporter

#: File results kept before a report is sent regardless of ``progress_interval``.
MAX_PENDING_RESULTS = 500


class Progress:
    """Counts what the engine did and reports ``running`` progress at most every ``interval`` s,
    sooner when enough file results wait: ``max_pending`` of them (at most
    :data:`MAX_PENDING_RESULTS`), or, with a lower ``min_pending``, half as many as the planned
    files whose results have not come yet, and at least ``min_pending``. ``add_bytes`` runs in copy
    threads; the rest in the engine's calling thread."""

    def __init__(self, reporter: Reporter, shard_id: str, base: dict[str, Any],
                 totals: tuple[int, int], *, interval: float, clock: Callable[[], float],
                 max_pending: int = MAX_PENDING_RESULTS, min_pending: int | None = None) -> None:
        self.reporter = reporter
        self.shard_id = shard_id
        self.base = base
        self.files_total, self.bytes_total = totals
        self.interval = interval
        self.clock = clock
        #: File results that send a report as soon as they wait (at most MAX_PENDING_RESULTS).
        self.max_pending = max(1, min(max_pending, MAX_PENDING_RESULTS))
        #: The fewest file results that send a report (the last ones of a shard wait for its end).
        self.min_pending = self.max_pending if min_pending is None else max(1, min(min_pending,
                                                                                   self.max_pending))
        #: Planned files whose results have not come yet.
        self._to_come = max(self.files_total, 0)
        self.files = 0
        self.bytes_done = 0
        self._moving = 0
        self._pending: list[dict[str, Any]] = []
        #: A report with file results was sent (the final one is then not the only one).
        self.streamed = False
        self._lock = threading.Lock()
        self.last = clock()

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self._moving += n

    def totals(self) -> tuple[int, int]:
        return self.files_total, self.bytes_total

    def take_pending(self) -> list[dict[str, Any]]:
        pending, self._pending = self._pending, []
        return pending

    def file_done(self, outcome: FileResult) -> None:
        with self._lock:
            if outcome.status == COPIED:
                self.files += 1
                self.bytes_done += outcome.bytes
                self._moving -= outcome.bytes
            elif outcome.status == SKIPPED:  # nothing to do for it: not part of the work
                self.files_total -= 1
                self.bytes_total -= outcome.bytes
        stamp = {"node": self.base["node"], "attempt": self.base["attempt"]}
        self._pending.append({**outcome.to_json(), **stamp})
        self._to_come -= 1
        waiting = len(self._pending)
        if waiting >= self.min_pending and waiting >= min(self.max_pending, self._to_come // 2):
            self.report()
        else:
            self.tick()

    def tick(self) -> None:
        if self.clock() - self.last >= self.interval:
            self.report()

    def report(self) -> None:
        self.last = self.clock()
        with self._lock:
            moving = max(self._moving, 0)
        report = {**self.base, "status": CLOUD_RUNNING, "files": self.files,
                  "bytes": self.bytes_done + moving, "files_total": self.files_total,
                  "bytes_total": max(self.bytes_total, 0)}
        pending = self.take_pending()
        if pending:
            report["file_results"] = pending
            self.streamed = True
        self.reporter.report_shard(self.shard_id, report)
