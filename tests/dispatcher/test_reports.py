"""BackgroundReports: placement reports wait out a cloud outage, in order, and never block."""

from __future__ import annotations

import threading
from typing import Any

from dispatcher.reports import BackgroundReports
from dmg.errors import NotFound, Retryable, StaleAttempt
from tests.workers.support import wait_for


class FlakyCloud:
    """Refuses with Retryable while ``down``; records what it accepts."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.refuse: set[str] = set()
        self.accepted: list[str] = []
        self.refused_calls = 0

    def report_shard(self, shard_id: str, report: dict[str, Any]) -> None:
        if self.down.is_set():
            self.refused_calls += 1
            raise Retryable("cannot reach the cloud")
        if shard_id in self.refuse:
            raise StaleAttempt("a newer attempt exists")
        self.accepted.append(shard_id)


def placed(attempt: int = 1) -> dict[str, Any]:
    return {"attempt": attempt, "node": "a", "status": "placed", "wait_reason": ""}


def test_reports_wait_for_the_cloud_and_keep_their_order() -> None:
    cloud = FlakyCloud()
    cloud.down.set()
    reports = BackgroundReports(cloud, backoff=0.01, max_backoff=0.05)
    try:
        for index in range(5):
            reports.report_shard(f"s{index}", placed())  # returns at once while the cloud is away
        wait_for(lambda: cloud.refused_calls >= 3, what="retries while the cloud is away")
        assert cloud.accepted == []

        cloud.down.clear()

        wait_for(lambda: len(cloud.accepted) == 5, what="delivery once the cloud is back")
        assert cloud.accepted == [f"s{index}" for index in range(5)]
    finally:
        reports.close(timeout=5)


def test_a_report_refused_for_good_is_dropped_and_the_rest_go_on() -> None:
    cloud = FlakyCloud()
    cloud.refuse = {"s1"}
    reports = BackgroundReports(cloud, backoff=0.01)
    try:
        for index in range(3):
            reports.report_shard(f"s{index}", placed())
        wait_for(lambda: len(cloud.accepted) == 2, what="the other reports delivered")
        assert cloud.accepted == ["s0", "s2"]
    finally:
        reports.close(timeout=5)


def test_close_gives_up_on_a_cloud_that_stays_away() -> None:
    cloud = FlakyCloud()
    cloud.down.set()
    reports = BackgroundReports(cloud, backoff=0.01, max_backoff=0.02)
    reports.report_shard("s0", placed())
    wait_for(lambda: cloud.refused_calls >= 1, what="a first try")

    reports.close(timeout=0.1)

    assert not reports._thread.is_alive()
    assert cloud.accepted == []


class BatchingCloud(FlakyCloud):
    """Takes batches (``report_batch``), like a cloud with ``POST /nodes/reports``;
    ``placement_unknown``: a shard whose item stops a batch once (sent again later);
    ``old``: a cloud of the previous version (no batch route)."""

    def __init__(self, *, old: bool = False) -> None:
        super().__init__()
        self.batches: list[list[str]] = []
        self.placement_unknown: set[str] = set()
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
            if item["shard_id"] in self.placement_unknown:
                self.placement_unknown.discard(item["shard_id"])
                return {"applied": len(results), "results": results, "retry": {"error": "retryable"}}
            self.accepted.append(item["shard_id"])
            results.append({"shard_id": item["shard_id"], "ok": True})
        return {"applied": len(results), "results": results, "retry": None}


def test_reports_queued_together_go_in_one_request_in_order_across_an_outage() -> None:
    cloud = BatchingCloud()
    cloud.down.set()
    cloud.placement_unknown = {"s3"}
    reports = BackgroundReports(cloud, backoff=0.01, max_backoff=0.05, linger=0.01)
    try:
        for index in range(6):
            reports.report_shard(f"s{index}", placed())
        wait_for(lambda: cloud.refused_calls >= 2, what="retries while the cloud is away")
        cloud.down.clear()
        wait_for(lambda: len(cloud.accepted) == 6, what="delivery once the cloud is back")
        assert cloud.accepted == [f"s{index}" for index in range(6)]  # nothing lost, none twice
        assert cloud.batches[0] == [f"s{index}" for index in range(6)]  # one request for all
        assert cloud.batches[1] == ["s3", "s4", "s5"]  # the rest, once s3's placement is known
    finally:
        reports.close(timeout=5)


def test_a_cloud_of_the_previous_version_gets_reports_one_by_one() -> None:
    cloud = BatchingCloud(old=True)
    reports = BackgroundReports(cloud, backoff=0.01, linger=0.01)
    try:
        for index in range(3):
            reports.report_shard(f"s{index}", placed())
        wait_for(lambda: len(cloud.accepted) == 3, what="the reports delivered")
        assert cloud.accepted == ["s0", "s1", "s2"] and cloud.batches == []
    finally:
        reports.close(timeout=5)
