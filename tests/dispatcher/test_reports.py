"""BackgroundReports: placement reports wait out a cloud outage, in order, and never block."""

from __future__ import annotations

import threading
from typing import Any

from dispatcher.reports import BackgroundReports
from dmg.errors import Retryable, StaleAttempt
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
