"""Run one attempt of one shard on this node: the logic behind ``dmg.copy_shard``.

Plain Python (no Celery), so it can be tested and reused directly. The contract:

1. :func:`workers.run.delivery.begin_delivery`: a stale attempt (a newer one exists,
   it finished, it came from a superseded dispatcher epoch, or the shard is
   unknown) returns status ``"stale"``; a redelivery of an attempt that a live
   process of this node still runs returns ``"duplicate"``; both touch nothing
   else. An attempt whose earlier executions killed their worker process
   ``max_worker_deaths`` times (OOM, crash) fails with that error instead of
   running again.
2. Reports ``running`` to the cloud, copies the shard's entries with
   :func:`dmg.transfer.copy_entries` under the activity's options
   (:class:`dmg.transfer.CopyOptions`; each file commits only while this attempt
   is current; the bandwidth limit is the activity run's, shared through Redis
   and changeable while it runs: :mod:`dmg.transfer.sitebandwidth`), and reports
   progress at most every ``progress_interval`` s.
3. Reports ``succeeded`` (no file failed) or ``failed`` (the first error), then
   ``SiteState.mark_finished``; either is reported only after the staging that
   older attempts left on nodes that never ended them is removed
   (:mod:`workers.run.leftovers`). A shard whose run a user cancelled
   (:meth:`dmg.site.state.SiteState.is_cancelled`, checked before it starts and
   every half second while it copies) does not start, or stops between chunks with
   its staged writes aborted: it is reported ``failed`` with :data:`CANCELLED_ERROR`
   and ends ``"cancelled"`` (not an error of the task). An
   attempt fenced off while copying ends ``"stale"`` without a final report: the
   newer attempt owns the shard's status.

Every report carries ``files``/``bytes`` done (copied; ``bytes`` also counts the
bytes of files in flight while running) and ``files_total``/``bytes_total`` to
do: the planned ones minus the files skipped as already up to date, so progress
ends at 100 %. Reports also carry the file results gathered since the previous
one under ``file_results`` (:class:`dmg.transfer.FileResult` JSON plus ``node``
and ``attempt``), which :meth:`dmg.cloud.client.CloudClient.report_shard` posts
to the run's per-file report; at most :data:`MAX_PENDING_RESULTS` wait at a time.

A shard of kind ``"part"`` (one range of a very large object, planned by
:mod:`dispatcher.splitting`) is run by :mod:`workers.run.part` instead of the
copy engine; it reports the same way.

Reporting never fails a shard (see :class:`workers.run.outbox.OutboxReporter`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from dmg.connectors import Connector, StoreSpec, connector_for
from dmg.errors import Cancelled, DmgError, Fatal, StaleAttempt
from dmg.ids import staging_id
from dmg.shards import ShardOutcome, ShardSpec
from dmg.shards.status import (
    CLOUD_FAILED,
    CLOUD_RUNNING,
    CLOUD_SUCCEEDED,
    OUTCOME_CANCELLED,
    OUTCOME_FAILED,
    OUTCOME_STALE,
    OUTCOME_SUCCEEDED,
)
from dmg.site.attempts import STARTED
from dmg.site.state import CANCELLED_REASON, SiteState
from dmg.transfer import COPIED, SKIPPED, CopyOptions, FileResult, Throttle, copy_entries
from dmg.transfer.sitebandwidth import SiteBandwidth
from workers.run.delivery import begin_delivery
from workers.run.leftovers import clean_fenced_staging, remove_staging
from workers.run.part import run_part
from workers.run.reporter import Reporter

log = logging.getLogger(__name__)

#: The error of a shard that did not start or stopped because its run was cancelled.
CANCELLED_ERROR = CANCELLED_REASON

#: File results kept before a report is sent regardless of ``progress_interval``.
MAX_PENDING_RESULTS = 500


class ShardFailed(Fatal):
    """A shard attempt ended failed; the message is the error reported to the cloud."""


def run_shard(
    shard_id: str,
    attempt: int,
    *,
    node: str,
    state: SiteState,
    reporter: Reporter,
    connector_factory: Callable[[StoreSpec], Connector] = connector_for,
    progress_interval: float = 5.0,
    clock: Callable[[], float] = time.time,
    epoch: int | None = None,
    max_worker_deaths: int = 0,
) -> ShardOutcome:
    """Run attempt ``attempt`` of ``shard_id`` on ``node``; see the module docstring.
    ``epoch``: the dispatcher epoch the message carries; ``max_worker_deaths`` 0: no limit."""
    begun, deliveries = begin_delivery(state, shard_id, attempt, node, epoch=epoch)
    if begun != STARTED:
        log.info("%s delivery skipped shard=%s attempt=%d node=%s", begun, shard_id, attempt, node)
        return ShardOutcome(begun, node, attempt, shard_id)
    started = clock()
    base: dict[str, Any] = {"attempt": attempt, "node": node, "started_at": started}
    stored = state.shard(shard_id) or {}
    try:
        spec = ShardSpec.from_json(stored.get("spec") or {})
    except DmgError as exc:
        return _finish(state, reporter, base, shard_id, ok=False, files=0, nbytes=0,
                       totals=(0, 0), error=str(exc), clock=clock)
    totals = (spec.files_total, spec.bytes_total)
    if state.is_cancelled(spec.activity_run_id):  # queued before its run was cancelled
        log.info("shard of a cancelled run not started shard=%s attempt=%d node=%s", shard_id, attempt, node)
        return replace(_finish(state, reporter, base, shard_id, ok=False, files=0, nbytes=0, totals=totals,
                               error=CANCELLED_ERROR, clock=clock), status=OUTCOME_CANCELLED)
    deaths = deliveries - 1  # every earlier start of this attempt ended with its process
    if deaths:  # the dead process may have left staged files under this attempt's staging id
        with contextlib.suppress(DmgError):
            remove_staging(spec.sink_store, staging_id(shard_id, attempt),
                           connector_factory=connector_factory)
    if max_worker_deaths and deaths >= max_worker_deaths:
        return _finish(state, reporter, base, shard_id, ok=False, files=0, nbytes=0, totals=totals,
                       error=f"the shard killed its worker process {deaths} times (out of memory or a "
                             f"crash); not retried (limit DMG_SHARD_MAX_WORKER_DEATHS={max_worker_deaths})",
                       clock=clock)
    if spec.part is not None:  # one range of a very large object
        return _run_part_shard(shard_id, attempt, spec=spec, state=state, reporter=reporter,
                               base=base, connector_factory=connector_factory, clock=clock)
    reporter.report_shard(shard_id, {**base, "status": CLOUD_RUNNING, "files": 0, "bytes": 0,
                                     "files_total": totals[0], "bytes_total": totals[1]})
    log.info("shard started shard=%s attempt=%d node=%s files=%d bytes=%d",
             shard_id, attempt, node, *totals)
    progress = _Progress(reporter, shard_id, base, totals, interval=progress_interval, clock=clock)
    connectors: list[Connector] = []
    try:
        options = CopyOptions.from_json(spec.options)
        source = connector_factory(spec.source_store)
        connectors.append(source)
        sink = connector_factory(spec.sink_store)
        connectors.append(sink)
        bandwidth = SiteBandwidth(state, spec.activity_run_id or shard_id, default=options.bandwidth)
        result = copy_entries(
            source, sink, spec.entries,
            source_prefix=spec.source_path, sink_prefix=spec.sink_path,
            staging_id=staging_id(shard_id, attempt),
            may_commit=lambda: state.is_current(shard_id, attempt),
            options=options, throttle=Throttle(bandwidth), sink_hints=spec.sink_hints,
            on_file=progress.file_done, on_bytes=progress.add_bytes, on_tick=progress.tick,
            stop_reason=lambda: CANCELLED_ERROR if state.is_cancelled(spec.activity_run_id) else "",
        )
    except StaleAttempt as exc:
        log.info("attempt fenced off while copying shard=%s attempt=%d node=%s: %s",
                 shard_id, attempt, node, exc)
        state.mark_finished(shard_id, attempt, node, ok=False)
        return ShardOutcome(OUTCOME_STALE, node, attempt, shard_id, progress.files, progress.bytes_done,
                            str(exc))
    except Cancelled as exc:
        log.info("shard stopped: its run was cancelled shard=%s attempt=%d node=%s", shard_id, attempt, node)
        return replace(_finish(state, reporter, base, shard_id, ok=False, files=progress.files,
                               nbytes=progress.bytes_done, totals=progress.totals(), error=str(exc),
                               clock=clock, file_results=progress.take_pending()), status=OUTCOME_CANCELLED)
    except DmgError as exc:
        return _finish(state, reporter, base, shard_id, ok=False, files=progress.files,
                       nbytes=progress.bytes_done, totals=progress.totals(), error=str(exc), clock=clock,
                       file_results=progress.take_pending())
    except Exception as exc:
        log.exception("shard crashed shard=%s attempt=%d node=%s", shard_id, attempt, node)
        _finish(state, reporter, base, shard_id, ok=False, files=progress.files, nbytes=progress.bytes_done,
                totals=progress.totals(), error=f"internal error in the worker: {type(exc).__name__}",
                clock=clock, file_results=progress.take_pending())
        raise
    finally:
        for connector in connectors:
            connector.close()
    # Every file is in place or given up: older attempts' staging goes before the shard ends.
    clean_fenced_staging(state, shard_id, attempt, connector_factory=connector_factory)
    failed = result.failed
    error = ""
    if failed:
        first = failed[0]
        error = f"{len(failed)} of {len(result.files)} files failed; first: {first.path}: {first.error}"
    return _finish(state, reporter, base, shard_id, ok=not failed, files=result.copied,
                   nbytes=result.bytes, totals=progress.totals(), error=error, clock=clock,
                   file_results=progress.take_pending())


def _run_part_shard(shard_id: str, attempt: int, *, spec: ShardSpec, state: SiteState,
                    reporter: Reporter, base: dict[str, Any],
                    connector_factory: Callable[[StoreSpec], Connector],
                    clock: Callable[[], float]) -> ShardOutcome:
    """A part shard (:mod:`workers.run.part`): its bytes, and the object once if it committed it."""
    node = str(base["node"])
    length = spec.part.length if spec.part is not None else 0
    try:
        outcome = run_part(shard_id, attempt, spec=spec, state=state, reporter=reporter, base=base,
                           connector_factory=connector_factory)
    except StaleAttempt as exc:
        log.info("part attempt fenced off shard=%s attempt=%d node=%s: %s", shard_id, attempt, node, exc)
        state.mark_finished(shard_id, attempt, node, ok=False)
        return ShardOutcome(OUTCOME_STALE, node, attempt, shard_id, error=str(exc))
    except DmgError as exc:
        return _finish(state, reporter, base, shard_id, ok=False, files=0, nbytes=0, totals=(0, length),
                       error=str(exc), clock=clock)
    except Exception as exc:
        log.exception("part shard crashed shard=%s attempt=%d node=%s", shard_id, attempt, node)
        _finish(state, reporter, base, shard_id, ok=False, files=0, nbytes=0, totals=(0, length),
                error=f"internal error in the worker: {type(exc).__name__}", clock=clock)
        raise
    files = int(outcome.committed)
    results = None
    if outcome.file_result is not None:
        results = [{**outcome.file_result.to_json(), "node": node, "attempt": attempt}]
    return _finish(state, reporter, base, shard_id, ok=outcome.ok, files=files,
                   nbytes=outcome.bytes if outcome.ok else 0, totals=(files, length), error=outcome.error,
                   clock=clock, file_results=results)


def _finish(state: SiteState, reporter: Reporter, base: dict[str, Any], shard_id: str, *, ok: bool,
            files: int, nbytes: int, totals: tuple[int, int], error: str,
            clock: Callable[[], float], file_results: list[dict[str, Any]] | None = None) -> ShardOutcome:
    status = OUTCOME_SUCCEEDED if ok else OUTCOME_FAILED
    attempt, node = int(base["attempt"]), str(base["node"])
    report = {**base, "status": CLOUD_SUCCEEDED if ok else CLOUD_FAILED, "files": files, "bytes": nbytes,
              "files_total": totals[0], "bytes_total": totals[1], "ended_at": clock(), "error": error}
    if file_results:
        report["file_results"] = file_results
    reporter.report_shard(shard_id, report)
    state.mark_finished(shard_id, attempt, node, ok=ok)
    if ok:
        log.info("shard succeeded shard=%s attempt=%d node=%s files=%d bytes=%d",
                 shard_id, attempt, node, files, nbytes)
    else:
        log.warning("shard failed shard=%s attempt=%d node=%s error=%s", shard_id, attempt, node, error)
    return ShardOutcome(status, node, attempt, shard_id, files, nbytes, error)


class _Progress:
    """Counts what the engine did and reports ``running`` progress at most every ``interval`` s
    (sooner when :data:`MAX_PENDING_RESULTS` file results wait). ``add_bytes`` runs in copy
    threads; the rest in the engine's calling thread."""

    def __init__(self, reporter: Reporter, shard_id: str, base: dict[str, Any],
                 totals: tuple[int, int], *, interval: float, clock: Callable[[], float]) -> None:
        self.reporter = reporter
        self.shard_id = shard_id
        self.base = base
        self.files_total, self.bytes_total = totals
        self.interval = interval
        self.clock = clock
        self.files = 0
        self.bytes_done = 0
        self._moving = 0
        self._pending: list[dict[str, Any]] = []
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
        if len(self._pending) >= MAX_PENDING_RESULTS:
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
        self.reporter.report_shard(self.shard_id, report)
