"""Plans and placement reports: kept in the site's Redis, sent by whichever dispatcher holds
the lease.

The plan of an activity run (its shard summaries) is an entry of the same list,
appended by the planner before any of its shards is queued (:meth:`PlacementOutbox.plan`),
so it always stands before its shards' placements: the cloud learns a plan, then
its placements, in order, many activity runs a request, and the planner never waits
for the cloud. Only the lease holder sends, from the list's head, and a new holder
takes the list as it is: several dispatchers never send one list in two orders.
A plan answered ``retry`` goes back to the tail with its placements behind it (the
cloud answers ``retry`` to a placement or a worker report whose plan it has not
heard of yet, never "not found").

A ``placed`` report tells the cloud which node an attempt went to (and why it waited);
the cloud takes a worker's reports of an attempt only from the node it was placed on,
so a placement the cloud never hears of would keep that worker's reports waiting
forever. A dispatcher may die at any point after placing, so:

- :class:`PlacementOutbox` (the placer's ``cloud``) appends the report to the site's
  ``placements`` list (one RPUSH) *before* the shard's message is sent: every attempt
  a worker can run has its placement report in Redis, whatever happens to the
  dispatcher next. A failed RPUSH raises BrokerError and nothing is sent.
- :class:`PlacementSender`, a thread of every dispatcher candidate, sends the list's
  head in batches (``POST /nodes/reports``, at most :data:`BATCH`; a batch that was not full
  is followed by the next no sooner than :data:`LINGER`) while its node holds
  the lease, each report under the lease's epoch (a report left by a dead predecessor
  goes with its successor's epoch: the site's state vouches for it), and settles what
  the cloud answered with a script that first checks the site's epoch is still the
  sender's (:data:`dmg.site.scripts.SETTLE_REPORTS`): a dispatcher that lost the lease
  removes nothing, its successor sends the same reports again (each is idempotent).
- Per report of the answer: taken, or refused for good (a newer attempt was
  reported, the shard is gone): removed. Not yet (the cloud's lease of the dead
  predecessor still runs, a concurrent write): put back at the tail, the others go
  on; the sender backs off. Refused because the cloud takes this node as its
  dispatcher no more (``not_dispatcher``): kept; the sender backs off until its lease
  ends or the cloud takes it again.
- A plan refused for good (:data:`PLAN_REFUSED`): its activity run is cancelled at the
  site, so none of its shards, placed or not, commits (:meth:`PlacementSender._refused_for_good`).
- A cloud of the previous version (no batch route, or a batch route that refuses plan
  items) gets them one by one (a plan with ``POST /activity-runs/{id}/shards``).
- The list also carries the reports of a node the cloud removed while it ran a shard
  (``relayed_for``: that node hands them over when its token is refused,
  :meth:`workers.run.outbox.ReportOutbox.relay`); they go with the dispatcher's epoch
  and the cloud checks them as that node's own (:mod:`dmg.cloud.service.relay`), so a
  shard it committed before it learned of its removal still ends at the cloud.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

from dmg.errors import BadInput, BrokerError, DmgError, NotFound, Retryable
from dmg.site import scripts
from dmg.site.state import SiteState

log = logging.getLogger(__name__)


#: Placement reports one request carries at most.
BATCH = 500
#: A batch of placements that was not full is followed by the next one no sooner than this
#: (s), however often placement rounds wake the sender (about one round per two activities
#: while a dispatcher is busy): more placements ride each request, and each request costs
#: the cloud and this process about a millisecond of CPU. A sender that sent no placement
#: for that long sends at once when woken: a lone run's placement goes as soon as its round
#: ends (a worker's report that reaches the cloud before its placement waits 0.25 s).
LINGER = 0.02
#: The errors with which the cloud refuses a plan for good (the activity run is gone, was
#: failed, was never claimed, or a shard id is another run's). ``stale_attempt`` is not one:
#: a newer dispatcher of this site took the run back and sends the same plan (from Redis).
PLAN_REFUSED = ("not_found", "conflict", "cancelled")


class ShardReports(Protocol):
    def report_shard(self, shard_id: str, report: dict[str, Any]) -> None: ...


class PlansAndReports(ShardReports, Protocol):
    """What the sender needs of the cloud (one by one, for a cloud without the batch route)."""

    def plan_shards(self, activity_run_id: str, *, epoch: int, shards: list[dict[str, Any]]) -> None: ...


@runtime_checkable
class _Batching(Protocol):
    def report_batch(self, items: list[dict[str, Any]]) -> dict[str, Any]: ...


class PlacementOutbox:
    """``report_shard`` that records the report in the site's ``placements`` list."""

    def __init__(self, state: SiteState) -> None:
        self.state = state
        self.key = state.keys.placements
        self.recorded = threading.Event()  # set at each entry: wakes this process's sender
        self._held = threading.local()  # per thread: entries recorded while the wake is held

    @contextlib.contextmanager
    def wake_after(self) -> Iterator[None]:
        """Entries this thread records inside wake the sender once, at the end (a placement
        round: the round's messages go out before the sender competes for the process, and
        its placements go to the cloud in one batch). Nested uses wake at the outer end."""
        outer = getattr(self._held, "count", None)
        if outer is None:
            self._held.count = 0
        try:
            yield
        finally:
            if outer is None:
                recorded, self._held.count = self._held.count, None
                if recorded:
                    self.recorded.set()

    def _wake(self) -> None:
        count = getattr(self._held, "count", None)
        if count is None:
            self.recorded.set()
        else:
            self._held.count = count + 1

    def report_shard(self, shard_id: str, report: dict[str, Any]) -> None:
        """Record one placement report (raises BrokerError: the caller sends nothing then)."""
        self.state.redis.rpush(self.key, self.entry(shard_id, report))
        self._wake()

    @staticmethod
    def entry(shard_id: str, report: dict[str, Any]) -> str:
        """The list entry of a placement report (what :meth:`report_shard` appends; the
        one-step placement script, :mod:`dmg.site.placing`, appends the same)."""
        return json.dumps({"shard_id": shard_id, "report": report})

    def noted(self) -> None:
        """An entry was appended by a script (:meth:`entry`): wake the sender as
        :meth:`report_shard` does."""
        self._wake()

    def plan(self, activity_run_id: str, shards: list[dict[str, Any]], *, queued_at: float) -> None:
        """Record the plan of an activity run (``[{id, index, files, bytes}]``, queued for
        placement at ``queued_at``), to reach the cloud before any placement recorded after
        it. Raises BrokerError."""
        self.state.redis.rpush(self.key, self.plan_entry(activity_run_id, shards, queued_at=queued_at))
        self._wake()

    @staticmethod
    def plan_entry(activity_run_id: str, shards: list[dict[str, Any]], *, queued_at: float) -> str:
        """The list entry of a plan (what :meth:`plan` appends; the planner's one-step
        :func:`dmg.site.plans.record_plan` appends the same; the placement round that
        places its shards wakes the sender, else the sender's poll finds it)."""
        return json.dumps({"plan": {"activity_run_id": activity_run_id, "shards": shards,
                                    "queued_at": queued_at}})

    def unsent_plans(self) -> set[str]:
        """The activity runs whose plans the cloud has not taken yet (a whole read of the
        list: for a claim after a failed one, not for the hot path). Raises BrokerError."""
        prefix = b'{"plan"'
        return {json.loads(raw)["plan"]["activity_run_id"]
                for raw in self.state.redis.lrange(self.key, 0, -1)
                if (raw if isinstance(raw, bytes) else str(raw).encode()).startswith(prefix)}

    def pending(self) -> int:
        """Placement reports the cloud has not taken yet."""
        return int(self.state.redis.llen(self.key))


class PlacementSender:
    """Sends the site's placement reports while ``epoch()`` gives the lease this node holds
    (None: not held); see the module docstring."""

    def __init__(self, state: SiteState, cloud: PlansAndReports, *, epoch: Callable[[], int | None],
                 poll: float = 0.05, backoff: float = 0.2, max_backoff: float = 5.0,
                 wake: threading.Event | None = None, linger: float = LINGER) -> None:
        self.state = state
        self.cloud = cloud
        self.epoch = epoch
        self.poll = poll
        self.linger = linger
        self._sent_at = float("-inf")  # monotonic time of the last placements' batch that was not full
        self._placements_sent = False  # the last batch carried a placement (not plans alone)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._settle = state.redis.register_script(scripts.SETTLE_REPORTS)
        self._single = not isinstance(cloud, _Batching)
        self._delay = backoff
        self._stop = threading.Event()
        # Set when this process records an entry (PlacementOutbox.recorded): sent at once,
        # not at the next poll; entries of other processes wait for the poll.
        self._wake = wake or threading.Event()
        self._thread: threading.Thread | None = None
        self._refused_plans: set[str] = set()  # shard ids of plans the cloud refused for good

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dmg-placement-reports", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sending (what is not sent stays in Redis for the next dispatcher)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            delay = self._step()
            if self._delay != self.backoff:  # backing off: a new entry does not cut it short
                self._stop.wait(delay)
            elif delay > 0:
                self._wake.wait(delay)
                self._stop.wait(max(0.0, self._sent_at + self.linger - time.monotonic()))  # LINGER
            self._wake.clear()

    def _step(self) -> float:
        """One round; -> how long to wait before the next."""
        epoch = self.epoch()
        if not epoch:
            return self.poll
        try:
            outcome = self.send_once(epoch)
        except Retryable as exc:
            if self._delay == self.backoff:
                log.warning("cloud unreachable, placement reports wait error=%s", exc)
            return self._back_off()
        except BrokerError as exc:
            log.warning("cannot read the placement reports error=%s", exc)
            return self.max_backoff
        except Exception:  # never let the sender die: the placements would wait for good
            log.exception("placement report sender error")
            return self.max_backoff
        if outcome == "wait":
            return self._back_off()
        self._delay = self.backoff
        if outcome == "sent" and self._placements_sent:
            # Not after plans alone (the poll found a plan before its round placed it): that
            # round's placement goes at once, ahead of its worker's report.
            self._sent_at = time.monotonic()
        return 0.0 if outcome == "more" else self.poll

    def _back_off(self) -> float:
        delay, self._delay = self._delay, min(self._delay * 2, self.max_backoff)
        return delay

    def send_once(self, epoch: int) -> str:
        """Send one batch from the head under ``epoch``; -> ``"idle"`` (nothing queued),
        ``"sent"``, ``"more"`` (a full batch: more are queued) or ``"wait"`` (some reports
        must wait: back off). Raises Retryable (cloud away; nothing removed), BrokerError."""
        raws: list[Any] = list(self.state.redis.lrange(self.state.keys.placements, 0, BATCH - 1))
        if not raws:
            return "idle"
        entries = [json.loads(raw) for raw in raws]
        self._placements_sent = any("plan" not in entry for entry in entries)
        if self._single:
            return self._send_singly(epoch, raws, entries)
        items, owners = _items(entries, epoch)
        try:
            answer = self.cloud.report_batch(items)  # type: ignore[attr-defined]
        except NotFound:
            self._single = True  # a cloud of the previous version
            return self._send_singly(epoch, raws, entries)
        except BadInput:
            if not any("plan" in item for item in items):
                raise
            # A cloud of the previous version: placements in batches, but no plan item
            # (the whole batch is refused, 400); it gets them one by one, as before.
            log.warning("the cloud takes no plan in a report batch; sending one by one")
            self._single = True
            return self._send_singly(epoch, raws, entries)
        results = list(answer.get("results") or [])
        outcomes: list[list[dict[str, Any]]] = [[] for _ in raws]  # an entry may be several items
        for index, owner in enumerate(owners):
            outcomes[owner].append(results[index] if index < len(results) else {"retry": True})
        later: list[Any] = []
        settled = 0
        for raw, answered in zip(raws, outcomes, strict=True):
            if any(r.get("not_dispatcher") for r in answered):
                break  # this and the rest stay for the lease's holder at the cloud
            settled += 1
            if any(r.get("retry") for r in answered) and not self._of_refused_plan(raw):
                later.append(raw)
            for result in answered:
                if not result.get("ok") and not result.get("retry"):
                    entry = json.loads(raw)
                    what = "relayed report" if entry.get("relayed_for") else _what(result)
                    log.warning("%s not taken by the cloud shard=%s error=%s", what,
                                result.get("shard_id"), result.get("message"))
                    self._refused_for_good(entry, str(result.get("error") or ""))
        self._settle_head(epoch, settled, later)
        if later or settled < len(raws):
            return "wait"
        return "more" if len(raws) == BATCH else "sent"

    def _send_singly(self, epoch: int, raws: list[Any], entries: list[dict[str, Any]]) -> str:
        settled = 0
        outcome = "sent"
        for entry in entries:
            if entry.get("relayed_for"):  # a cloud without the batch route cannot take it
                log.warning("relayed report dropped (the cloud has no batch route) shard=%s node=%s",
                            entry["shard_id"], entry["relayed_for"])
                settled += 1
                continue
            item = _item(entry, epoch)
            try:
                if "plan" in item:
                    plan = item["plan"]
                    self.cloud.plan_shards(plan["activity_run_id"], epoch=epoch,  # an older cloud
                                           shards=plan["shards"])
                else:
                    self.cloud.report_shard(item["shard_id"], item["report"])
            except Retryable:
                outcome = "wait"
                break
            except DmgError as exc:
                log.warning("%s not taken by the cloud error=%s", _what(item), exc)
                self._refused_for_good(entry, exc.code)
            settled += 1
        self._settle_head(epoch, settled, [])
        return outcome

    def _refused_for_good(self, entry: dict[str, Any], error: str) -> None:
        """A plan the cloud will never take (:data:`PLAN_REFUSED`): its shards may be placed
        already (placement does not wait for the cloud), so the run is cancelled at the site
        (:meth:`dmg.site.state.SiteState.cancel`, as a user's cancel): its pending shards are
        dropped, a queued one is refused by its worker, a running one stops before its next
        file or chunk and aborts its staged writes. Nothing of it commits after that; the
        cloud, which refused it, shows none of it."""
        plan = entry.get("plan")
        if not plan or error not in PLAN_REFUSED:
            return
        run_id = str(plan["activity_run_id"])
        self._refused_plans.update(str(shard["id"]) for shard in plan.get("shards") or ())
        try:
            dropped = self.state.cancel(run_id)
        except BrokerError as exc:  # the flag is set again when the plan is replayed
            log.warning("cannot cancel the shards of a refused plan activity_run=%s error=%s", run_id, exc)
            return
        log.warning("plan refused by the cloud (%s); its shards are cancelled at the site "
                    "activity_run=%s pending_dropped=%d", error, run_id, len(dropped))

    def _of_refused_plan(self, raw: Any) -> bool:
        """A placement report of a shard whose plan the cloud refused for good: the cloud
        would answer ``retry`` (no such shard) forever; it is dropped instead."""
        if not self._refused_plans:
            return False
        shard_id = json.loads(raw).get("shard_id")
        if shard_id not in self._refused_plans:
            return False
        log.info("placement of a shard whose plan was refused dropped shard=%s", shard_id)
        return True

    def _settle_head(self, epoch: int, count: int, later: list[Any]) -> None:
        if count and not int(self._settle(keys=[self.state.keys.placements, self.state.keys.epoch],
                                          args=[epoch, count, *later])):
            log.info("placement reports left to the next dispatcher (lease epoch %d superseded)", epoch)


def _items(entries: list[dict[str, Any]], epoch: int) -> tuple[list[dict[str, Any]], list[int]]:
    """The batch items of ``entries`` under ``epoch`` and, per item, its entry's index. A
    relayed entry (a removed node's report, :mod:`dmg.cloud.service.relay`) becomes that
    node's items (file results first), each naming the node and the epoch."""
    items: list[dict[str, Any]] = []
    owners: list[int] = []
    for index, entry in enumerate(entries):
        node = entry.get("relayed_for")
        if node:
            relayed = list(entry.get("items") or [])  # built by the node (ReportOutbox.relay)
            items.extend({**item, "relayed_for": node, "epoch": epoch} for item in relayed)
            owners.extend(index for _ in relayed)
        else:
            items.append(_item(entry, epoch))
            owners.append(index)
    return items, owners


def _item(entry: dict[str, Any], epoch: int) -> dict[str, Any]:
    """The batch item of a list entry, under the sender's lease ``epoch``."""
    if "plan" in entry:
        return {"plan": {**entry["plan"], "epoch": epoch}}
    return {"shard_id": entry["shard_id"], "report": {**entry["report"], "epoch": epoch}}


def _what(item: dict[str, Any]) -> str:
    """``plan activity_run=...`` or ``placement shard=...``, for a log line."""
    if "plan" in item:
        return f"plan activity_run={item['plan'].get('activity_run_id')}"
    if item.get("activity_run_id"):
        return f"plan activity_run={item['activity_run_id']}"
    return f"placement shard={item.get('shard_id')}"
