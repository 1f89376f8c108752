"""Shard reports wait in Redis until delivered; one sender per node delivers them in batches.

DESIGN.md: "the cloud being unreachable stops new claims, not running work;
reports are retried until delivered". Each node has its own outbox, a Redis list
``dmg:<gateway>:outbox:<node>`` of ``{"shard_id", "report"}`` JSON (a report may
carry ``file_results``, held as rows: :mod:`dmg.cloud.filerows`).

- Workers queue their reports (:class:`OutboxReporter` with ``queue_first``): one
  RPUSH, no HTTP call on the worker's path.
- The node agent's :class:`OutboxSender` thread is the outbox's one consumer. Idle (its
  last look found nothing to send), it blocks on the outbox's wake-up list, which a report
  queued into an empty outbox fills: that report (a short shard's one final report) goes
  at once. Busy, it lets reports gather for :attr:`OutboxSender.poll` s between batches.
  Each time it takes
  up to :data:`BATCH_ITEMS` reports from the head, sends them in one request
  (``POST /nodes/reports``, :mod:`dmg.cloud.service.batches`), and trims exactly the
  reports the cloud handled. A report superseded inside the batch (a ``running`` report
  followed by a later report of the same attempt) is not sent. A cloud of the
  previous version (no batch route) gets the reports one by one (:meth:`ReportOutbox.flush`).
- The cloud answers each report on its own. One it cannot take yet (a worker's report
  of an attempt whose placement has not reached the cloud) never blocks the others:
  it moves, with the later reports of its shard (a shard's reports keep their order),
  to the held hash ``outbox-held:<node>`` and is sent again after a backoff
  (:data:`HELD_WAIT` doubling up to :data:`HELD_MAX_WAIT`) until the cloud takes or
  refuses it. The dispatcher's placement reports wait in Redis too
  (:mod:`dispatcher.reports`), so the placement does reach the cloud.
- A node the cloud removed while it ran a shard gets its token refused; its reports
  (a shard it committed just before it learned of its removal) go to the gateway's
  dispatcher instead of being dropped (:meth:`ReportOutbox.relay`,
  :mod:`dmg.cloud.service.relay`), so that shard still ends at the cloud.
- Nothing is lost or counted twice across a cloud outage: a report leaves the outbox
  only after the cloud answered for it, and every report is idempotent at the cloud,
  so a batch sent again after a lost answer changes nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Protocol

from dmg.cloud.filerows import as_result, as_row
from dmg.cloud.limits import MAX_BODY_VALUES, MAX_FILE_RESULTS
from dmg.errors import BrokerError, DmgError, NotFound, Retryable, Unauthorized
from dmg.shards.status import CLOUD_RUNNING
from dmg.site.state import SiteState
from workers.run.reporter import Reporter

log = logging.getLogger(__name__)

#: Reports one batch request carries at most, and their JSON size at most (a single
#: larger report goes alone).
BATCH_ITEMS = 500
BATCH_BYTES = 2 * 1024 * 1024
#: JSON values (keys, items, leaves) one batch request carries at most: the cloud refuses a
#: body of more than :data:`dmg.cloud.limits.MAX_BODY_VALUES` as a whole (a single larger report
#: goes alone; a report carries at most ``MAX_PENDING_RESULTS`` file results).
BATCH_VALUES = MAX_BODY_VALUES - 200
#: Values an outbox entry may grow by as a batch item (its envelope), counted generously.
ITEM_VALUES = 16
#: A held report (the cloud cannot take it yet) is sent again after this many seconds,
#: doubling with each try up to HELD_MAX_WAIT. Short: the usual cause is a short shard's
#: final report overtaking its placement, which the lease holder sends within its linger
#: (20 ms, :data:`dispatcher.reports.LINGER`) and one request; at 0.25 s one single-file run
#: in eight waited a quarter of a second more (``bench/cli_wait.py``).
HELD_WAIT = 0.03
HELD_MAX_WAIT = 5.0


class BatchClient(Protocol):
    """The part of :class:`dmg.cloud.client.CloudClient` the sender uses."""

    def report_batch(self, items: list[dict[str, Any]]) -> dict[str, Any]: ...


class BatchOutcome:
    """What one :meth:`ReportOutbox.send_batch` did: ``settled`` reports left the outbox's
    list; ``wait``: reports were held (the cloud cannot take them yet);
    ``unsupported``: the cloud has no batch route (previous version); ``streaming``: a
    ``running`` report carried file results (a long shard streams its results)."""

    def __init__(self, settled: int = 0, *, wait: bool = False, unsupported: bool = False,
                 full: bool = False, refused: bool = False, streaming: bool = False) -> None:
        self.settled = settled
        self.wait = wait
        self.unsupported = unsupported
        self.full = full
        self.refused = refused  # the cloud refuses this node's token (removed): nothing moved
        self.streaming = streaming


class ReportOutbox:
    """A node's queue of undelivered shard reports (oldest first)."""

    def __init__(self, state: SiteState, node: str) -> None:
        self.state = state
        self.node = node
        self.key = state.keys.outbox(node)

    def entry(self, shard_id: str, report: dict[str, Any]) -> str:
        """The outbox entry of ``report`` (JSON); its file results are kept as rows
        (:func:`dmg.cloud.filerows.as_row`: the envelope's ``node`` and ``attempt`` left out)."""
        if report.get("file_results"):
            report = {**report, "file_results": [as_row(r) for r in report["file_results"]]}
        return json.dumps({"shard_id": shard_id, "report": report})

    def push(self, shard_id: str, report: dict[str, Any]) -> None:
        """Queue ``report`` (:meth:`entry`)."""
        queued = self.state.redis.rpush(self.key, self.entry(shard_id, report))
        if queued == 1:  # the outbox was empty: its sender may be waiting idle (wait_for_report)
            pipe = self.state.redis.pipeline(transaction=False)
            pipe.lpush(self.wake_key, 1)
            pipe.ltrim(self.wake_key, 0, 0)  # one wake-up at most, however many are unread
            pipe.execute()

    @property
    def wake_key(self) -> str:
        return self.state.keys.outbox_wake(self.node)

    @property
    def flush_key(self) -> str:
        return self.state.keys.outbox_flush(self.node)

    def wait_for_report(self, timeout: float) -> bool:
        """Block up to ``timeout`` s until a report is queued into the empty outbox, or a
        flush is asked (a hint: the caller looks at the outbox either way); True when woken.
        Raises BrokerError."""
        if timeout <= 0:
            return False
        return self.state.redis.blpop([self.wake_key, self.flush_key], timeout=timeout) is not None

    def ask_flush(self) -> None:
        """Ask the sender to send what is queued now rather than after its gathering pause
        (:meth:`wait_for_flush`): a shard that streamed its file results ended. Raises
        BrokerError."""
        pipe = self.state.redis.pipeline(transaction=False)
        pipe.lpush(self.flush_key, 1)
        pipe.ltrim(self.flush_key, 0, 0)  # one at most, however many are unread
        pipe.execute()

    def wait_for_flush(self, timeout: float) -> bool:
        """Block up to ``timeout`` s until a flush is asked (:meth:`ask_flush`); True when
        asked. Raises BrokerError."""
        if timeout <= 0:
            return False
        return self.state.redis.blpop([self.flush_key], timeout=timeout) is not None

    def send_batch(self, client: BatchClient, *, max_items: int = BATCH_ITEMS,
                   now: float | None = None) -> BatchOutcome:
        """Send the held reports now due, then up to ``max_items`` reports from the head, in
        one request. A report the cloud handled (delivered, or refused for good: logged and
        dropped) leaves the outbox; one it cannot take yet (``retry``: its placement is not
        known there yet) is held, with the later reports of its shard, and sent again after
        a backoff (:meth:`held`), while the node's other reports go on. Raises Retryable
        when the cloud is away (nothing moved), BrokerError for Redis. The caller must be
        the outbox's only consumer."""
        at = time.time() if now is None else now
        # The held reports and the head of the list in one round trip.
        pipe = self.state.redis.pipeline(transaction=False)
        pipe.hgetall(self.held_key)
        pipe.lrange(self.key, 0, max_items - 1)
        raw_held, head = pipe.execute()
        held = _held_of(raw_held)
        due = sorted((s for s, h in held.items() if h["due"] <= at), key=lambda s: held[s]["due"])
        due = due[:max(1, max_items // 2)]  # the rest next time: a request stays within its limits
        raws: list[Any] = list(head)
        if not raws and not due:
            return BatchOutcome()
        fresh: list[dict[str, Any]] = []
        size = 0
        values = sum(json_values(e) + ITEM_VALUES for s in due for e in held[s]["entries"])
        for raw in raws:  # a request stays well under the cloud's body and value limits
            entry = json.loads(raw)
            size += len(raw)
            values += json_values(entry) + ITEM_VALUES
            if fresh and (size > BATCH_BYTES or values > BATCH_VALUES):
                break
            fresh.append(entry)
        # A shard with held reports keeps its order: its new reports wait behind them.
        changed: dict[str, dict[str, Any]] = {}
        entries: list[dict[str, Any]] = [e for s in due for e in held[s]["entries"]]
        for entry in fresh:
            shard_id = entry["shard_id"]
            if shard_id in held and shard_id not in due:
                changed.setdefault(shard_id, dict(held[shard_id], entries=list(held[shard_id]["entries"])))
                changed[shard_id]["entries"].append(entry)
            else:
                entries.append(entry)
        try:
            outcome = self._send(client, entries) if entries else {}
        except NotFound:
            return BatchOutcome(unsupported=True)  # a cloud of the previous version
        except Unauthorized:
            return BatchOutcome(refused=True)
        for shard_id in due:
            changed.setdefault(shard_id, {})  # settled unless held again just below
        for shard_id, waiting in _held_again(entries, outcome).items():
            tries = int(held.get(shard_id, {}).get("tries", 0)) + 1
            changed[shard_id] = {"due": at + min(HELD_WAIT * 2.0 ** (tries - 1), HELD_MAX_WAIT),
                                 "tries": tries, "since": held.get(shard_id, {}).get("since", at),
                                 "entries": waiting}
            if tries == 1:
                log.info("shard report held until the cloud can take it shard=%s reports=%d", shard_id,
                         len(waiting))
        pipe = self.state.redis.pipeline(transaction=True)
        for shard_id, record in changed.items():
            if record:
                pipe.hset(self.held_key, shard_id, json.dumps(record))
            else:
                pipe.hdel(self.held_key, shard_id)
        if fresh:
            pipe.ltrim(self.key, len(fresh), -1)
        pipe.execute()
        streaming = any(e["report"].get("status") == CLOUD_RUNNING and e["report"].get("file_results")
                        for e in fresh)
        return BatchOutcome(len(fresh), wait=any(r for r in changed.values()),
                            full=len(fresh) < len(raws) or len(raws) == max_items, streaming=streaming)

    def _send(self, client: BatchClient, entries: list[dict[str, Any]]) -> dict[int, bool]:
        """Send ``entries``; -> per entry index, True when it must be sent again. Raises
        NotFound (no batch route), Retryable; a batch refused as a whole: NotFound too."""
        items, owners = batch_items(entries)
        try:
            answer = client.report_batch(items)
        except (NotFound, Retryable, Unauthorized):
            raise
        except DmgError as exc:  # the batch as a whole was refused: find the bad report alone
            log.warning("report batch refused (%s); sending its reports one by one", exc)
            raise NotFound(str(exc)) from exc
        results = list(answer.get("results") or [])
        again: dict[int, bool] = {}
        for index, owner in enumerate(owners):
            result = results[index] if index < len(results) else {"retry": True}  # not answered
            if result.get("retry"):
                again[owner] = True
            else:
                again.setdefault(owner, False)
                if not result.get("ok"):
                    log.warning("shard report dropped shard=%s error=%s message=%s", result.get("shard_id"),
                                result.get("error"), result.get("message"))
        return again

    def relay(self, *, max_items: int = BATCH_ITEMS) -> int:
        """Hand up to ``max_items`` undelivered reports (the held ones first) to the gateway's
        dispatcher: the cloud refuses this node's token (it was removed), and a shard this
        node committed must still end at the cloud (:mod:`dmg.cloud.service.relay`). They
        move, in one MULTI, to the site's ``placements`` list, which the lease's holder
        sends (:mod:`dispatcher.reports`); -> how many moved. Raises BrokerError."""
        held = self.held()
        raws: list[Any] = list(self.state.redis.lrange(self.key, 0, max_items - 1))
        entries = [e for h in sorted(held.values(), key=lambda h: h.get("since", 0.0)) for e in h["entries"]]
        entries += [json.loads(raw) for raw in raws]
        if not entries:
            return 0
        pipe = self.state.redis.pipeline(transaction=True)
        # Each entry goes as its batch items (file results first), ready for the dispatcher.
        relayed = [{"shard_id": e["shard_id"], "relayed_for": self.node, "items": batch_items([e])[0]}
                   for e in entries]
        pipe.rpush(self.state.keys.placements, *(json.dumps(r) for r in relayed))
        if held:
            pipe.delete(self.held_key)
        if raws:
            pipe.ltrim(self.key, len(raws), -1)
        pipe.execute()
        return len(entries)

    @property
    def held_key(self) -> str:
        return self.state.keys.outbox_held(self.node)

    def held(self) -> dict[str, dict[str, Any]]:
        """Shard id -> ``{due, tries, since, entries}``: reports the cloud could not take yet."""
        return _held_of(self.state.redis.hgetall(self.held_key))

    def held_since(self, before: float) -> int:
        """How many shards have reports held since before ``before`` (POSIX seconds)."""
        return sum(1 for h in self.held().values() if float(h.get("since", 0.0)) < before)

    def size(self) -> int:
        return int(self.state.redis.llen(self.key))

    def flush(self, reporter: Reporter, *, max_seconds: float | None = None) -> int:
        """Deliver queued reports in order; returns how many left the outbox.

        Stops at the first Retryable (the report stays first in line), and once
        ``max_seconds`` have passed (the rest waits for the next flush: a long backlog
        must not hold up the caller's heartbeats). A report the cloud refuses for good
        (StaleAttempt, NotFound, ...) is dropped with a warning.
        """
        done = 0
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        while deadline is None or time.monotonic() < deadline:
            raw: Any = self.state.redis.lindex(self.key, 0)
            if raw is None:
                return done
            item = json.loads(raw)
            try:
                reporter.report_shard(item["shard_id"], _results_as_objects(item["report"]))
            except Retryable:
                return done
            except DmgError as exc:
                log.warning("shard report dropped shard=%s status=%s error=%s",
                            item["shard_id"], item["report"].get("status"), exc)
            # Remove exactly the item delivered (LREM of its first occurrence).
            self.state.redis.lrem(self.key, 1, raw)
            done += 1
        return done


def _held_of(raw: dict[Any, Any]) -> dict[str, dict[str, Any]]:
    """The held hash as read (:meth:`ReportOutbox.held`)."""
    return {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in raw.items()}


def _held_again(entries: list[dict[str, Any]], again: dict[int, bool]) -> dict[str, list[dict[str, Any]]]:
    """Shard id -> its entries to hold: from its first entry the cloud asked for again on
    (a report left out of the batch, superseded by a later one, goes with the later ones)."""
    held: dict[str, list[dict[str, Any]]] = {}
    pending: dict[str, list[dict[str, Any]]] = {}  # entries not sent, waiting for their shard's fate
    for index, entry in enumerate(entries):
        shard_id = entry["shard_id"]
        if shard_id in held:
            held[shard_id].append(entry)
        elif index not in again:
            pending.setdefault(shard_id, []).append(entry)
        elif again[index]:
            held[shard_id] = [*pending.pop(shard_id, []), entry]
        else:
            pending.pop(shard_id, None)
    return held


def json_values(value: Any) -> int:
    """How many values (keys, items, leaves) ``value`` holds, counted as the cloud counts
    them (:func:`dmg.definitions.check_shape`)."""
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            count += len(item)  # the keys
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _results_as_objects(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` with its file results as objects: the single route's form, which a cloud
    without the batch route (or one that refuses rows) takes."""
    results = report.get("file_results")
    if not results:
        return report
    return {**report, "file_results": [as_result(r) if isinstance(r, list) else r for r in results]}


def _files_body(attempt: Any, node: Any, results: list[Any]) -> dict[str, Any]:
    """A batch item's ``files`` body: rows (lists) as ``rows``, objects (an earlier node's
    entries) as ``files``."""
    body: dict[str, Any] = {"attempt": attempt, "node": node}
    rows = [r for r in results if isinstance(r, list)]
    if rows:
        body["rows"] = rows
    if len(rows) < len(results):
        body["files"] = [r for r in results if not isinstance(r, list)]
    return body


def batch_items(entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """The batch request items of outbox ``entries`` and, per item, the index of the entry
    it comes from. File results go first, as the entry holds them (rows:
    :meth:`ReportOutbox.entry`; an earlier node's objects), in items
    of at most :data:`MAX_FILE_RESULTS`; a
    report without file results followed by a later report of the same shard attempt is
    left out (the later one says everything it said: one final report for a short shard)."""
    last: dict[tuple[str, int], int] = {}
    for index, entry in enumerate(entries):
        last[(entry["shard_id"], int(entry["report"].get("attempt", 0)))] = index
    items: list[dict[str, Any]] = []
    owners: list[int] = []
    for index, entry in enumerate(entries):
        shard_id = entry["shard_id"]
        report = dict(entry["report"])
        results = report.pop("file_results", None) or []
        superseded = last[(shard_id, int(report.get("attempt", 0)))] != index
        if superseded and not results:
            continue
        # As the entry holds them (:meth:`ReportOutbox.entry`'s rows, or an earlier node's
        # objects: the cloud takes both), so they were counted as they are sent.
        chunks = [results[k:k + MAX_FILE_RESULTS] for k in range(0, len(results), MAX_FILE_RESULTS)]
        for k, chunk in enumerate(chunks):
            item: dict[str, Any] = {"shard_id": shard_id,
                                    "files": _files_body(report.get("attempt", 0), report.get("node"), chunk)}
            if k == len(chunks) - 1 and not superseded:
                item["report"] = report
            items.append(item)
            owners.append(index)
        if not chunks:
            items.append({"shard_id": shard_id, "report": report})
            owners.append(index)
    return items, owners


class OutboxSender:
    """The node's one outbox consumer: a thread that sends queued reports in batches,
    backing off while the cloud is away. Idle, it waits (up to ``poll`` s at a time) for a
    report to be queued and sends it at once; after a batch it lets the next reports gather
    for ``poll`` s (a busy node sends a batch every ``poll`` s, not one request per report);
    while long shards stream their file results, that pause ends when a flush is asked
    (:meth:`ReportOutbox.ask_flush`: such a shard ended, and its final report, which ends
    the shard at the cloud, goes at once); it stays so after a batch of final reports alone
    (the first of several such shards ended; the others' ends come next), until the outbox
    is found empty.
    Falls back to one request per report for a cloud without the batch route."""

    def __init__(self, outbox: ReportOutbox, client: BatchClient, single: Reporter, *,
                 poll: float = 0.05, retry_wait: float = 0.2, max_backoff: float = 5.0) -> None:
        self.outbox = outbox
        self.client = client
        self.single = single
        self.poll = poll
        self.retry_wait = retry_wait
        self.max_backoff = max_backoff
        self.lock = threading.Lock()  # the one consumer: the heartbeat's flush takes it too
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._away = 0
        self._moved = time.monotonic()  # when the outbox last got shorter or was empty
        self._idle = False  # the last round found nothing to send and nothing held
        self._gathering = False  # the last round sent a batch, not full, while shards stream
        #: A batch carried streamed file results since the outbox was last found empty.
        self._streamed = False

    def stuck(self, *, after: float = 5.0) -> bool:
        """True while the cloud is away for the sender, or it has moved nothing for
        ``after`` s with reports queued (the heartbeat then says reports are waiting)."""
        return self._away > 0 or time.monotonic() - self._moved > after

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"dmg-outbox-{self.outbox.node}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def send_once(self) -> BatchOutcome:
        """Send one batch (or, to a cloud of the previous version, flush one by one)."""
        with self.lock:
            outcome = self.outbox.send_batch(self.client)
            if outcome.unsupported:
                return BatchOutcome(self.outbox.flush(self.single, max_seconds=5.0))
            if outcome.refused:
                moved = self.outbox.relay()
                log.warning("the cloud refuses this node's token (removed): %d shard report(s) handed "
                            "to the gateway's dispatcher node=%s", moved, self.outbox.node)
                return BatchOutcome(moved)
            return outcome

    def _run(self) -> None:
        while not self._stop.is_set():
            pause = self._step()
            if pause > 0 and self._idle:
                self._wait_idle(pause)
            elif pause > 0 and self._gathering:
                self._wait_gathering(pause)
            else:
                self._stop.wait(pause)

    def _wait_idle(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for a report to be queued (the outbox's wake-up)."""
        try:
            self.outbox.wait_for_report(timeout)
        except BrokerError:
            self._stop.wait(timeout)

    def _wait_gathering(self, timeout: float) -> None:
        """Let reports gather for up to ``timeout`` s, less when a flush is asked."""
        try:
            self.outbox.wait_for_flush(timeout)
        except BrokerError:
            self._stop.wait(timeout)

    def _step(self) -> float:
        """One round; -> how long to wait before the next (:attr:`_idle` says whether that
        wait may end early, when a report is queued)."""
        self._idle = self._gathering = False
        try:
            outcome = self.send_once()
        except Retryable as exc:
            self._away += 1
            if self._away == 1:
                log.warning("cloud unreachable, shard reports wait in the outbox node=%s error=%s",
                            self.outbox.node, exc)
            return min(self.retry_wait * 2.0 ** min(self._away, 6), self.max_backoff)
        except BrokerError as exc:
            log.warning("cannot read the report outbox node=%s error=%s", self.outbox.node, exc)
            return self.max_backoff
        except Exception:  # never let the sender die: the reports would stay queued
            log.exception("outbox sender error node=%s", self.outbox.node)
            return self.max_backoff
        if self._away:
            log.info("cloud reachable again: outbox delivering node=%s", self.outbox.node)
            self._away = 0
        if outcome.settled or not outcome.wait:
            self._moved = time.monotonic()
        if outcome.wait:  # reports held: look again when the first falls due
            return min(self.retry_wait, HELD_WAIT)
        # Nothing was sent: idle until a report is queued (at most one poll: held reports
        # fall due, and stop() is heard). A full batch: more are queued, send at once; else
        # let reports gather for one poll (a busy node sends a batch every ``poll`` s).
        self._idle = not outcome.settled
        # Only while long shards stream their results (else a plain pause, no Redis command):
        # from a batch with streamed results until the outbox is empty, so that the pause
        # after one such shard's final report still ends at the next one's flush.
        self._streamed = outcome.streaming or (self._streamed and not self._idle)
        self._gathering = bool(outcome.settled) and not outcome.full and self._streamed
        return 0.0 if outcome.full else self.poll


class OutboxReporter:
    """Delivers through ``inner`` now if it can, else through the outbox later.

    Never raises: a report is delivered, queued, or (refused by the cloud for good)
    dropped with a warning. Reports keep their order: while older reports wait in
    the outbox, new ones queue behind them.
    """

    def __init__(self, inner: Reporter, outbox: ReportOutbox, *, queue_first: bool = False) -> None:
        self.inner = inner
        self.outbox = outbox
        self.queue_first = queue_first

    def report_shard(self, shard_id: str, report: dict[str, Any]) -> None:
        if self.queue_first:
            self._queue(shard_id, report)
            return
        try:
            if self.outbox.size() == 0:
                try:
                    self.inner.report_shard(shard_id, report)
                    return
                except Retryable as exc:
                    log.warning("cloud unreachable, shard report queued shard=%s status=%s error=%s",
                                shard_id, report.get("status"), exc)
                except DmgError as exc:
                    log.warning("shard report refused shard=%s status=%s error=%s",
                                shard_id, report.get("status"), exc)
                    return
            self.outbox.push(shard_id, report)
        except BrokerError as exc:
            log.error("shard report lost (broker unreachable) shard=%s status=%s error=%s",
                      shard_id, report.get("status"), exc)

    def final_entry(self, shard_id: str, report: dict[str, Any]) -> tuple[str, str, str] | None:
        """With ``queue_first``: the outbox entry of ``report``, for the caller to queue in
        its own Redis step (:class:`workers.run.reporter.FinalInOutbox`); else None."""
        if not self.queue_first:
            return None
        return self.outbox.key, self.outbox.wake_key, self.outbox.entry(shard_id, report)

    def flush(self) -> None:
        """Ask the node's sender to send what is queued now (:meth:`ReportOutbox.ask_flush`);
        a broker error only delays the report to the sender's next round."""
        if not self.queue_first:
            return
        try:
            self.outbox.ask_flush()
        except BrokerError as exc:
            log.warning("outbox flush not asked node=%s error=%s", self.outbox.node, exc)

    def _queue(self, shard_id: str, report: dict[str, Any]) -> None:
        """Into the outbox (the node agent's sender delivers it); straight to the cloud
        only when Redis cannot take it."""
        try:
            self.outbox.push(shard_id, report)
            return
        except BrokerError as exc:
            log.warning("outbox unreachable, shard report sent directly shard=%s error=%s", shard_id, exc)
        try:
            self.inner.report_shard(shard_id, report)
        except DmgError as exc:
            log.error("shard report lost (broker and cloud unreachable) shard=%s status=%s error=%s",
                      shard_id, report.get("status"), exc)
