"""The lifecycle of one shard attempt on this node, written once for every kind of shard.

:func:`run_attempt` takes the attempt from its delivery to its end; what the attempt
*does* (copy files, write one part of a very large object) is an :class:`AttemptBody`
that :mod:`workers.run.shard` picks from the spec. The steps, in this order:

1. **Begin the delivery** (:func:`workers.run.delivery.begin_delivery`, one Redis round
   trip with the site's identity check and the spec read): a stale attempt
   (a newer one exists, it finished, it came from a superseded dispatcher epoch, or the
   shard is unknown) ends ``"stale"``; a redelivery of an attempt that a live process of
   this node still runs ends ``"duplicate"``. Both touch nothing else: no report, no
   ``mark_finished``.
2. **Read the spec**; an unreadable one fails the attempt.
3. **A cancelled run** (:meth:`dmg.site.state.SiteState.is_cancelled`): the shard does
   not start; it is reported ``failed`` with :data:`CANCELLED_ERROR` and ends
   ``"cancelled"`` (not an error of the task).
4. **Worker deaths**: every earlier delivery of this attempt ended with its process
   (OOM, crash). What such a process staged under this attempt's staging id is removed
   (best effort); at ``max_worker_deaths`` deaths (0: no limit) the attempt fails with
   that error instead of running again.
5. **Report running** with the body's totals.
6. **Run the body.** It ends in :class:`Done`, or raises:

   - :class:`~dmg.errors.StaleAttempt` (fenced off while running): ``mark_finished``
     (not ok) and ``"stale"`` **without a final report**: the newer attempt owns the
     shard's status;
   - :class:`~dmg.errors.Cancelled`: reported ``failed`` with what was done so far,
     ends ``"cancelled"``;
   - another :class:`~dmg.errors.DmgError`: reported ``failed`` with what was done so far;
   - anything else: reported ``failed`` ("internal error in the worker: <type>"), then
     re-raised, so the task errors too.

   The body closes its connectors before it returns or raises. Whatever must happen
   before the shard may be called succeeded happens inside the body: a part shard's
   commit owner commits the object and marks it done there, so the activity run cannot
   succeed before the object is visible.
7. **Leftovers**: a body that writes under staging ids (:attr:`AttemptBody.stages`) has
   the staging that older, fenced attempts left on nodes that never ended them removed
   (:func:`workers.run.leftovers.clean_fenced_staging`) — *before* the final report, so
   a succeeded shard leaves no staging behind.
8. **Final report** ``succeeded`` or ``failed``, then **mark finished**
   (:meth:`~dmg.site.state.SiteState.mark_finished`), in that order; with a reporter
   that queues reports in the node's outbox, both (and the bytes moved) in one Redis
   script (:func:`dmg.site.attempts.finish_run`), and with a :class:`FinalResult` a
   succeeded attempt's task result too; in a packed message, with the start (step 1) of
   the next shard it carries as well (``then_start``), which that shard then does not
   take again.

Reporting never fails an attempt (see :class:`workers.run.outbox.OutboxReporter`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from dmg.attempt_ends import CANCELLED_REASON
from dmg.connectors import Connector, StoreSpec
from dmg.errors import BrokerError, Cancelled, DmgError, StaleAttempt
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
from dmg.site.attempts import STARTED, RunStart, TaskResult, finish_run
from dmg.site.state import SiteState
from workers.run.delivery import NextStart, activity_run_of, begin_delivery
from workers.run.leftovers import clean_fenced_staging, remove_staging
from workers.run.reporter import FinalInOutbox, Reporter

log = logging.getLogger(__name__)

#: The error of a shard that did not start or stopped because its run was cancelled.
CANCELLED_ERROR = CANCELLED_REASON


@dataclass
class Done:
    """What a body did: the fields of the final report (or of a failure report so far)."""

    ok: bool
    files: int
    bytes: int
    totals: tuple[int, int]
    error: str = ""
    file_results: list[dict[str, Any]] | None = None
    #: Reports before the final one carried file results: the final report may queue behind
    #: others in the node's outbox, and the sender is asked to send it at once.
    streamed: bool = False


class FinalResult(Protocol):
    """The task's result of a succeeded attempt, stored in the attempt's last Redis step
    (:func:`dmg.site.attempts.finish_run`) instead of by Celery after the task returns
    (:class:`workers.resultstore.ResultWithTheEnd`)."""

    def entry(self, outcome: ShardOutcome) -> TaskResult | None:
        """What to store for ``outcome`` (the task returns its ``task_result()``); None: the
        task's runner stores it as usual."""
        ...

    def stored(self) -> None:
        """The entry was stored: the task's runner must not store it again."""
        ...


@dataclass(frozen=True)
class Attempt:
    """One attempt being run: who, where, and the fields every report carries (``base``)."""

    shard_id: str
    attempt: int
    node: str
    state: SiteState
    reporter: Reporter
    connector_factory: Callable[[StoreSpec], Connector]
    clock: Callable[[], float]
    base: dict[str, Any] = field(default_factory=dict)
    final_result: FinalResult | None = None
    #: The next shard of a packed message, started with this attempt's end (one round trip).
    then_start: NextStart | None = None


class AttemptBody(Protocol):
    """The work of one kind of shard inside :func:`run_attempt`."""

    #: True when the body writes under the attempt's staging id (older attempts' staging
    #: is then removed before the final report).
    stages: bool

    def running_totals(self) -> tuple[int, int]:
        """``(files_total, bytes_total)`` of the ``running`` report."""
        ...

    def run(self) -> Done:
        """Do the work; raise StaleAttempt when fenced off, Cancelled when the run was
        cancelled, DmgError when it failed."""
        ...

    def so_far(self) -> Done:
        """What was done when the body stopped early (stale, cancelled, failed)."""
        ...


#: Builds the body of an attempt from its spec (called after step 4).
BodyFactory = Callable[[ShardSpec, Attempt], AttemptBody]


def run_attempt(
    shard_id: str,
    attempt: int,
    *,
    node: str,
    state: SiteState,
    reporter: Reporter,
    connector_factory: Callable[[StoreSpec], Connector],
    body_for: BodyFactory,
    clock: Callable[[], float],
    epoch: int | None = None,
    max_worker_deaths: int = 0,
    final_result: FinalResult | None = None,
    carried: bool = False,
    started: NextStart | None = None,
    then_start: NextStart | None = None,
) -> ShardOutcome:
    """Run attempt ``attempt`` of ``shard_id`` on ``node`` through the steps of the module
    docstring; the body comes from ``body_for``. ``carried``: the message carries other
    shards too (:func:`workers.run.delivery.begin_delivery`); ``started``: this attempt's
    start as the end of the shard before it took it; ``then_start``: the next shard the
    message carries, started with this attempt's end when that end is one Redis step
    (its :attr:`~workers.run.delivery.NextStart.answer` is set then)."""
    begun = begin_delivery(state, shard_id, attempt, node, epoch=epoch, carried=carried, started=started)
    if begun.outcome != STARTED:
        log.info("%s delivery skipped shard=%s attempt=%d node=%s", begun.outcome, shard_id, attempt, node)
        return ShardOutcome(begun.outcome, node, attempt, shard_id)
    deliveries = begun.deliveries
    run = Attempt(shard_id, attempt, node, state, reporter, connector_factory, clock,
                  {"attempt": attempt, "node": node, "started_at": clock()}, final_result, then_start)
    try:  # the spec came with the start (one round trip)
        spec = ShardSpec.from_json(json.loads(begun.spec or "{}"))
    except (DmgError, ValueError) as exc:
        return finish(run, Done(False, 0, 0, (0, 0), str(exc)))
    totals = (spec.files_total, spec.bytes_total)
    if _cancelled(state, shard_id, spec, begun):  # queued before its run was cancelled
        log.info("shard of a cancelled run not started shard=%s attempt=%d node=%s", shard_id, attempt, node)
        return replace(finish(run, Done(False, 0, 0, totals, CANCELLED_ERROR)), status=OUTCOME_CANCELLED)
    deaths = deliveries - 1  # every earlier start of this attempt ended with its process
    if deaths:  # the dead process may have left staged files under this attempt's staging id
        with contextlib.suppress(DmgError):
            remove_staging(spec.sink_store, staging_id(shard_id, attempt),
                           connector_factory=connector_factory)
    if max_worker_deaths and deaths >= max_worker_deaths:
        error = (f"the shard killed its worker process {deaths} times (out of memory or a crash); "
                 f"not retried (limit DMG_SHARD_MAX_WORKER_DEATHS={max_worker_deaths})")
        return finish(run, Done(False, 0, 0, totals, error))
    body = body_for(spec, run)
    running = body.running_totals()
    reporter.report_shard(shard_id, {**run.base, "status": CLOUD_RUNNING, "files": 0, "bytes": 0,
                                     "files_total": running[0], "bytes_total": running[1]})
    # At DEBUG: the end's line says when it started (seconds=); a long shard shows as running
    # in the cloud (its held running report goes after SHORT_SHARD s).
    log.debug("shard started shard=%s attempt=%d node=%s files=%d bytes=%d",
              shard_id, attempt, node, *running)
    try:
        done = body.run()
    except StaleAttempt as exc:
        log.info("attempt fenced off shard=%s attempt=%d node=%s: %s", shard_id, attempt, node, exc)
        state.mark_finished(shard_id, attempt, node, ok=False)
        so_far = body.so_far()
        count_moved(state, node, so_far.bytes)
        return ShardOutcome(OUTCOME_STALE, node, attempt, shard_id, so_far.files, so_far.bytes, str(exc))
    except Cancelled as exc:
        log.info("shard stopped: its run was cancelled shard=%s attempt=%d node=%s", shard_id, attempt, node)
        return replace(finish(run, _failed(body.so_far(), str(exc))), status=OUTCOME_CANCELLED)
    except DmgError as exc:
        return finish(run, _failed(body.so_far(), str(exc)))
    except Exception as exc:
        log.exception("shard crashed shard=%s attempt=%d node=%s", shard_id, attempt, node)
        finish(run, _failed(body.so_far(), f"internal error in the worker: {type(exc).__name__}"))
        raise
    if body.stages:  # every file is in place or given up: older attempts' staging goes first
        clean_fenced_staging(state, shard_id, attempt, connector_factory=connector_factory)
    return finish(run, done)


def _cancelled(state: SiteState, shard_id: str, spec: ShardSpec, begun: RunStart) -> bool:
    """Whether the shard's run is cancelled: the start's own answer when it looked at the
    spec's run (:func:`workers.run.delivery.activity_run_of`), else one more look."""
    if begun.cancelled is not None and spec.activity_run_id == activity_run_of(shard_id):
        return begun.cancelled
    return state.is_cancelled(spec.activity_run_id)


def _failed(so_far: Done, error: str) -> Done:
    return replace(so_far, ok=False, error=error)


def count_moved(state: SiteState, node: str, copied: int) -> None:
    """Add an attempt's bytes to the node's own figures (a copy reads and writes each byte
    once); best effort: a broker outage loses the figure, never the attempt."""
    try:
        state.count_moved(node, read=copied, written=copied)
    except BrokerError as exc:
        log.warning("bytes moved not counted node=%s error=%s", node, exc)


def finish(run: Attempt, done: Done) -> ShardOutcome:
    """Send the final report of ``done``, then mark the attempt finished (in that order)."""
    status = OUTCOME_SUCCEEDED if done.ok else OUTCOME_FAILED
    ended_at = run.clock()
    report = {**run.base, "status": CLOUD_SUCCEEDED if done.ok else CLOUD_FAILED, "files": done.files,
              "bytes": done.bytes, "files_total": done.totals[0], "bytes_total": done.totals[1],
              "ended_at": ended_at, "error": done.error}
    if done.file_results:
        report["file_results"] = done.file_results
    outcome = ShardOutcome(status, run.node, run.attempt, run.shard_id, done.files, done.bytes, done.error)
    if not _finish_in_one_step(run, report, outcome, moved=done.bytes, streamed=done.streamed):
        run.reporter.report_shard(run.shard_id, report)
        run.state.mark_finished(run.shard_id, run.attempt, run.node, ok=done.ok)
        count_moved(run.state, run.node, done.bytes)
    seconds = ended_at - float(run.base.get("started_at", ended_at))
    if done.ok:
        log.info("shard succeeded shard=%s attempt=%d node=%s files=%d bytes=%d seconds=%.3f",
                 run.shard_id, run.attempt, run.node, done.files, done.bytes, seconds)
    else:
        log.warning("shard failed shard=%s attempt=%d node=%s seconds=%.3f error=%s",
                    run.shard_id, run.attempt, run.node, seconds, done.error)
    return outcome


def _finish_in_one_step(run: Attempt, report: dict[str, Any], outcome: ShardOutcome, *, moved: int,
                        streamed: bool = False) -> bool:
    """Queue the final report in the node's outbox, count the bytes and mark the attempt
    finished in one Redis step (:func:`dmg.site.attempts.finish_run`) when the reporter
    queues its reports there (:class:`~workers.run.reporter.FinalInOutbox`), with a
    succeeded attempt's task result (:class:`FinalResult`); then, for an attempt that
    ``streamed`` its file results, ask the sender to flush. False: not done (another
    reporter, or Redis failed: the caller takes the step by step path, whose report
    reaches the cloud directly when Redis cannot take it, and the task's result is
    stored as usual)."""
    reporter = run.reporter
    entry = reporter.final_entry(run.shard_id, report) if isinstance(reporter, FinalInOutbox) else None
    if entry is None:
        return False
    ok = outcome.status == OUTCOME_SUCCEEDED
    final = run.final_result if ok else None
    result = final.entry(outcome) if final is not None else None
    then_start = run.then_start
    try:
        answer = finish_run(run.state, run.shard_id, run.attempt, run.node, ok=ok, outbox=entry, moved=moved,
                            result=result, then_start=None if then_start is None else then_start.call)
    except BrokerError as exc:
        log.warning("attempt end not recorded in one step shard=%s attempt=%d node=%s error=%s",
                    run.shard_id, run.attempt, run.node, exc)
        return False
    if then_start is not None:
        then_start.answer = answer
    if streamed and isinstance(reporter, FinalInOutbox):  # the sender may be letting reports
        reporter.flush()  # gather: the shard's end goes now
    if final is not None and result is not None:
        final.stored()
    return True
