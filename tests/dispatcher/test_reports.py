"""Placement reports wait in Redis; the lease's holder sends them, whoever placed them.

Against a real Redis, with in-memory clouds (the real cloud's side is in
tests/workers/test_outbox_batches.py): the reports wait out an outage in order,
one the cloud cannot take yet goes back to the tail while the others go on, a
dispatcher whose epoch was superseded removes nothing, and a placement whose message
cannot be sent goes back to pending.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from dispatcher.placement import PendingShard, Placer
from dispatcher.reports import PlacementOutbox, PlacementSender
from dmg.errors import BadInput, NotFound, Retryable, StaleAttempt
from dmg.placement import NodeLoad
from dmg.site.state import SiteState
from tests.workers.support import wait_for


class FlakyCloud:
    """One report a request; refuses with Retryable while ``down``; records what it accepts."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.refuse: set[str] = set()
        self.accepted: list[tuple[str, int]] = []  # (shard id, the epoch it came with)
        self.refused_calls = 0

    def report_shard(self, shard_id: str, report: dict[str, Any]) -> None:
        if self.down.is_set():
            self.refused_calls += 1
            raise Retryable("cannot reach the cloud")
        if shard_id in self.refuse:
            raise StaleAttempt("a newer attempt exists")
        self.accepted.append((shard_id, int(report["epoch"])))


class BatchingCloud(FlakyCloud):
    """Takes batches; ``not_yet``: shards answered ``retry`` once; ``not_dispatcher``: every
    item is refused as from a node that is not the dispatcher; ``old``: no batch route."""

    def __init__(self, *, old: bool = False) -> None:
        super().__init__()
        self.batches: list[list[str]] = []
        self.not_yet: set[str] = set()
        self.not_dispatcher = False
        self.old = old

    def report_batch(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if self.old:
            raise NotFound("no route /nodes/reports")
        if self.down.is_set():
            self.refused_calls += 1
            raise Retryable("cannot reach the cloud")
        self.batches.append([i["shard_id"] for i in items])
        results: list[dict[str, Any]] = []
        for item in items:
            shard_id = item["shard_id"]
            if self.not_dispatcher:
                results.append({"shard_id": shard_id, "ok": False, "error": "stale_attempt",
                                "not_dispatcher": True})
            elif shard_id in self.not_yet:
                self.not_yet.discard(shard_id)
                results.append({"shard_id": shard_id, "ok": False, "retry": True, "error": "retryable"})
            elif shard_id in self.refuse:
                results.append({"shard_id": shard_id, "ok": False, "error": "stale_attempt"})
            else:
                self.accepted.append((shard_id, int(item["report"]["epoch"])))
                results.append({"shard_id": shard_id, "ok": True})
        return {"applied": len(results), "results": results}


class PlanningCloud(FlakyCloud):
    """Takes plans too, one a request."""

    def __init__(self) -> None:
        super().__init__()
        self.plans: list[str] = []

    def plan_shards(self, activity_run_id: str, *, epoch: int, shards: list[dict[str, Any]]) -> None:
        if self.down.is_set():
            self.refused_calls += 1
            raise Retryable("cannot reach the cloud")
        self.plans.append(activity_run_id)


def placed(attempt: int = 1, epoch: int = 1) -> dict[str, Any]:
    return {"attempt": attempt, "node": "a", "status": "placed", "wait_reason": "", "epoch": epoch}


def sender_for(state: SiteState, cloud: FlakyCloud, epoch: list[int]) -> PlacementSender:
    return PlacementSender(state, cloud, epoch=lambda: epoch[0] or None, poll=0.01, backoff=0.01,
                           max_backoff=0.05)


def test_reports_wait_for_the_cloud_in_redis_and_keep_their_order(state: SiteState) -> None:
    state.redis.set(state.keys.epoch, 1)
    outbox, cloud, epoch = PlacementOutbox(state), FlakyCloud(), [1]
    cloud.down.set()
    cloud.refuse = {"s2"}
    for index in range(5):
        outbox.report_shard(f"s{index}", placed())
    sender = sender_for(state, cloud, epoch)
    sender.start()
    try:
        wait_for(lambda: cloud.refused_calls >= 3, what="retries while the cloud is away")
        assert outbox.pending() == 5
        cloud.down.clear()
        wait_for(lambda: outbox.pending() == 0, what="delivery once the cloud is back")
        assert cloud.accepted == [(f"s{i}", 1) for i in (0, 1, 3, 4)]  # s2 refused for good: dropped
    finally:
        sender.stop()


def test_the_plans_the_cloud_has_not_taken_are_known_until_it_takes_them(state: SiteState) -> None:
    # (a dispatcher whose claim failed names them as held: they are not sent again)
    state.redis.set(state.keys.epoch, 1)
    outbox, cloud, epoch = PlacementOutbox(state), PlanningCloud(), [1]
    cloud.down.set()
    outbox.plan("ar1", [{"id": "ar1-00000", "index": 0, "files": 1, "bytes": 1}], queued_at=time.time())
    outbox.report_shard("ar1-00000", placed())
    outbox.plan("ar2", [], queued_at=time.time())
    assert outbox.unsent_plans() == {"ar1", "ar2"}
    sender = sender_for(state, cloud, epoch)
    sender.start()
    try:
        cloud.down.clear()
        wait_for(lambda: outbox.pending() == 0, what="delivery once the cloud is back")
        assert outbox.unsent_plans() == set() and cloud.plans == ["ar1", "ar2"]
    finally:
        sender.stop()


def test_one_report_not_taken_yet_goes_back_to_the_tail_and_the_rest_go_on(state: SiteState) -> None:
    state.redis.set(state.keys.epoch, 1)
    outbox, cloud, epoch = PlacementOutbox(state), BatchingCloud(), [1]
    cloud.not_yet = {"s1"}
    for index in range(4):
        outbox.report_shard(f"s{index}", placed())
    sender = sender_for(state, cloud, epoch)
    assert sender.send_once(1) == "wait"
    assert [s for s, _e in cloud.accepted] == ["s0", "s2", "s3"] and outbox.pending() == 1
    assert sender.send_once(1) == "sent"
    assert cloud.batches == [["s0", "s1", "s2", "s3"], ["s1"]] and outbox.pending() == 0


def test_a_dead_dispatchers_placements_are_sent_by_its_successor_with_its_epoch(state: SiteState) -> None:
    # Given a dispatcher (epoch 1) that recorded two placements and died before sending them,
    state.redis.set(state.keys.epoch, 1)
    outbox, cloud = PlacementOutbox(state), BatchingCloud()
    outbox.report_shard("s0", placed(epoch=1))
    outbox.report_shard("s1", placed(epoch=1))
    state.redis.set(state.keys.epoch, 2)  # the lease went to another node
    # When the stale dispatcher's sender (it woke up) and the new one send,
    stale = sender_for(state, cloud, [1])
    assert stale.send_once(1) == "sent"
    assert outbox.pending() == 2  # the stale one removes nothing: its epoch was superseded
    successor = sender_for(state, cloud, [2])
    assert successor.send_once(2) == "sent"
    # Then each placement reached the cloud, the last time under the successor's epoch.
    assert outbox.pending() == 0 and cloud.accepted[-2:] == [("s0", 2), ("s1", 2)]


def test_reports_refused_as_not_from_the_dispatcher_stay_for_the_next_one(state: SiteState) -> None:
    state.redis.set(state.keys.epoch, 1)
    outbox, cloud = PlacementOutbox(state), BatchingCloud()
    outbox.report_shard("s0", placed())
    cloud.not_dispatcher = True
    assert sender_for(state, cloud, [1]).send_once(1) == "wait"
    assert outbox.pending() == 1
    cloud.not_dispatcher = False
    assert sender_for(state, cloud, [1]).send_once(1) == "sent" and outbox.pending() == 0


def test_a_sender_sends_nothing_while_its_node_does_not_hold_the_lease(state: SiteState) -> None:
    state.redis.set(state.keys.epoch, 1)
    outbox, cloud, epoch = PlacementOutbox(state), BatchingCloud(), [0]
    outbox.report_shard("s0", placed())
    sender = sender_for(state, cloud, epoch)
    sender.start()
    try:
        wait_for(lambda: True, timeout=0.2, what="a few rounds")
        assert cloud.batches == [] and outbox.pending() == 1
        epoch[0] = 1
        wait_for(lambda: outbox.pending() == 0, what="sent once the lease is held")
    finally:
        sender.stop()


def test_a_cloud_of_the_previous_version_gets_reports_one_by_one(state: SiteState) -> None:
    state.redis.set(state.keys.epoch, 1)
    outbox, cloud = PlacementOutbox(state), BatchingCloud(old=True)
    for index in range(3):
        outbox.report_shard(f"s{index}", placed())
    assert sender_for(state, cloud, [1]).send_once(1) == "sent"
    assert [s for s, _e in cloud.accepted] == ["s0", "s1", "s2"] and cloud.batches == []


class PlanlessCloud(BatchingCloud):
    """A cloud of the previous version: batches of placements, a plan only on its own route."""

    def __init__(self) -> None:
        super().__init__()
        self.plans: list[tuple[str, int]] = []

    def report_batch(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if any("plan" in item for item in items):
            raise BadInput("the cloud refused the request: items.0.shard_id: field required")
        return super().report_batch(items)

    def plan_shards(self, activity_run_id: str, *, epoch: int, shards: list[dict[str, Any]]) -> None:
        self.plans.append((activity_run_id, epoch))


def test_a_cloud_that_takes_no_plan_in_a_batch_gets_plans_and_reports_one_by_one(state: SiteState) -> None:
    state.redis.set(state.keys.epoch, 1)
    outbox, cloud = PlacementOutbox(state), PlanlessCloud()
    outbox.plan("ar1", [{"id": "s0", "index": 0, "files": 1, "bytes": 1}], queued_at=1.0)
    outbox.report_shard("s0", placed())
    assert sender_for(state, cloud, [1]).send_once(1) == "sent"
    assert cloud.plans == [("ar1", 1)] and [s for s, _e in cloud.accepted] == ["s0"]
    assert outbox.pending() == 0


class BrokenSender:
    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        raise ConnectionError("the broker refused the message")


def test_a_placement_whose_message_cannot_be_sent_goes_back_to_pending(state: SiteState) -> None:
    # Given a shard planned and pending,
    state.redis.set(state.keys.epoch, 1)
    state.save_shard("s0", {"id": "s0"})
    state.redis.rpush(state.keys.pending, "s0")
    outbox = PlacementOutbox(state)
    placer = Placer(state=state, sender=BrokenSender(), cloud=outbox, holding=lambda: True, max_queued=1,
                    epoch=lambda: 1)
    node = NodeLoad(name="a", limit=1, running=0, queued=0, online=True)
    # When its message cannot be sent,
    with pytest.raises(ConnectionError):
        placer._place("s0", node, PendingShard(None, "", 0))
    # Then its placement report was recorded first, and the shard waits to be placed again.
    shard = state.shard("s0")
    assert shard is not None and shard["node"] == "" and shard["attempt"] == 2  # 1 is fenced off
    assert state.pending() == ["s0"] and outbox.pending() == 1


def test_a_placement_round_wakes_the_sender_once_at_its_end(state: SiteState) -> None:
    # Given the outbox of a dispatcher whose placement round records two placements
    outbox = PlacementOutbox(state)
    with outbox.wake_after():
        outbox.report_shard("s1", {"attempt": 1, "node": "a", "status": "placed"})
        with outbox.wake_after():  # nested: still the outer round's end
            outbox.report_shard("s2", {"attempt": 1, "node": "a", "status": "placed"})
        # Then the sender is not woken while the round sends its messages
        assert not outbox.recorded.is_set() and outbox.pending() == 2
        # (another thread, a planner replaying a plan, wakes it as before)
        other = threading.Thread(target=outbox.plan, args=("ar1", []), kwargs={"queued_at": 1.0})
        other.start()
        other.join()
        assert outbox.recorded.is_set()
        outbox.recorded.clear()
    # But once, at the end of the round
    assert outbox.recorded.is_set() and outbox.pending() == 3
    outbox.recorded.clear()
    with outbox.wake_after():  # a round that recorded nothing wakes nobody
        pass
    assert not outbox.recorded.is_set()


class PlanRefusingCloud:
    """Refuses every plan for good with ``error`` (the activity run was failed meanwhile, or is
    gone); a placement of a shard it never heard of is answered ``retry``, as the real cloud
    answers it."""

    def __init__(self, error: str) -> None:
        self.error = error
        self.batches = 0

    def report_batch(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        self.batches += 1
        results: list[dict[str, Any]] = []
        for item in items:
            if "plan" in item:
                results.append({"activity_run_id": item["plan"]["activity_run_id"], "ok": False,
                                "error": self.error, "message": "refused"})
            else:
                results.append({"shard_id": item["shard_id"], "ok": False, "retry": True,
                                "error": "retryable", "message": "no plan heard of yet"})
        return {"applied": len(results), "results": results}


@pytest.mark.parametrize("error", ["conflict", "not_found"])
def test_shards_placed_under_a_plan_the_cloud_refuses_are_cancelled_at_the_site(
        state: SiteState, error: str) -> None:
    # Given a plan of two shards, one placed already (placement does not wait for the cloud)
    state.redis.set(state.keys.epoch, 1)
    outbox = PlacementOutbox(state)
    shards: list[dict[str, Any]] = [{"id": f"ar9-{i:05d}", "index": i, "files": 1, "bytes": 1}
                                    for i in range(2)]
    outbox.plan("ar9", shards, queued_at=1.0)
    for summary in shards:
        state.save_shard(summary["id"], {})
    state.push_pending(shards[1]["id"])
    assert state.new_attempt(shards[0]["id"], "a", epoch=1) == 1
    outbox.report_shard(shards[0]["id"], placed())
    cloud = PlanRefusingCloud(error)

    # When the cloud refuses the plan for good
    sender = sender_for(state, cloud, [1])  # type: ignore[arg-type]
    assert sender.send_once(1) == "sent"

    # Then the run is cancelled at the site: the pending shard is dropped, the placed one is
    # refused by its worker (or stops before its next file: the flag its commit checks), and
    # its placement does not wait for a plan that will never come
    assert state.is_cancelled("ar9")
    assert state.pending() == []
    assert outbox.pending() == 0 and cloud.batches == 1


def test_a_plan_refused_as_claimed_by_a_newer_dispatcher_cancels_nothing(state: SiteState) -> None:
    # (the newer dispatcher of this site sends the same plan, from Redis, under its epoch)
    state.redis.set(state.keys.epoch, 1)
    outbox = PlacementOutbox(state)
    outbox.plan("ar9", [{"id": "ar9-00000", "index": 0, "files": 1, "bytes": 1}], queued_at=1.0)

    assert sender_for(state, PlanRefusingCloud("stale_attempt"), [1]).send_once(1) == "sent"  # type: ignore[arg-type]

    assert not state.is_cancelled("ar9")


class TimedCloud(BatchingCloud):
    """A batching cloud that notes when each batch came (monotonic) and takes every plan."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def report_batch(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        self.times.append(time.monotonic())
        reports = [item for item in items if "plan" not in item]
        answer = super().report_batch(reports) if reports else {"results": []}
        taken = iter(answer["results"])
        results = [{"activity_run_id": item["plan"]["activity_run_id"], "ok": True} if "plan" in item
                   else next(taken) for item in items]
        return {"applied": len(results), "results": results}


def test_a_busy_sender_lets_placements_gather_for_its_linger_and_an_idle_one_sends_at_once(
        state: SiteState) -> None:
    # Given a sender with a long linger, idle
    state.redis.set(state.keys.epoch, 1)
    outbox, cloud = PlacementOutbox(state), TimedCloud()
    sender = PlacementSender(state, cloud, epoch=lambda: 1, poll=0.01, wake=outbox.recorded, linger=0.5)
    sender.start()
    try:
        # When a round records a placement, it goes at once (nothing was sent for a linger)
        began = time.monotonic()
        outbox.report_shard("s1", placed())
        wait_for(lambda: len(cloud.batches) == 1, what="the first placement")
        assert cloud.times[0] - began < 0.4
        # And rounds right after it, each waking the sender, ride one batch after the linger
        for shard_id in ("s2", "s3", "s4"):
            outbox.report_shard(shard_id, placed())
            time.sleep(0.02)
        wait_for(lambda: outbox.pending() == 0, what="the later placements")
        assert cloud.batches == [["s1"], ["s2", "s3", "s4"]]
        assert cloud.times[1] - cloud.times[0] >= 0.5
        # Then, idle for longer than the linger, the next placement goes at once again
        time.sleep(0.6)
        began = time.monotonic()
        outbox.report_shard("s5", placed())
        wait_for(lambda: len(cloud.batches) == 3, what="a lone placement after a quiet spell")
        assert cloud.times[2] - began < 0.4
    finally:
        sender.stop()


def test_a_plan_sent_alone_does_not_hold_back_the_placement_that_follows_it(state: SiteState) -> None:
    # Given a sender with a long linger whose poll sent a plan alone (before its round placed it)
    state.redis.set(state.keys.epoch, 1)
    outbox, cloud = PlacementOutbox(state), TimedCloud()
    sender = PlacementSender(state, cloud, epoch=lambda: 1, poll=0.01, wake=outbox.recorded, linger=0.5)
    sender.start()
    try:
        state.redis.rpush(state.keys.placements, outbox.plan_entry("ar1", [], queued_at=1.0))
        wait_for(lambda: outbox.pending() == 0, what="the plan, found by the poll")
        # When the round then places its shard, the placement goes at once, not after a linger
        began = time.monotonic()
        outbox.report_shard("ar1-0", placed())
        wait_for(lambda: outbox.pending() == 0 and len(cloud.times) == 2, what="the placement")
        assert cloud.times[1] - began < 0.4
    finally:
        sender.stop()
