"""HttpReporter and the outbox against a real HTTP server and real Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib

from dmg.cloud.client import CloudClient
from dmg.errors import Retryable
from dmg.procs import free_port
from dmg.site.state import SiteState
from tests.workers.support import StubCloud, dead_redis, wait_for
from workers.run.outbox import OutboxReporter, ReportOutbox
from workers.run.reporter import RELEASE_TICK, HttpReporter, MemoryReporter, ShortShardReporter


@pytest.fixture
def cloud() -> Iterator[StubCloud]:
    with StubCloud() as stub:
        yield stub


@pytest.fixture
def outbox(redis_client: redis_lib.Redis) -> ReportOutbox:
    return ReportOutbox(SiteState(redis_client, "gw"), "a")


def report(status: str, attempt: int = 1) -> dict[str, object]:
    return {"attempt": attempt, "node": "a", "status": status}


def test_http_reporter_retries_a_busy_cloud_with_backoff(cloud: StubCloud) -> None:
    cloud.fail_next = 2
    delays: list[float] = []
    with CloudClient(cloud.url, token="t") as client:
        reporter = HttpReporter(client, attempts=3, backoff=0.25, sleep=delays.append)
        reporter.report_shard("s1", report("running"))
    assert cloud.statuses("s1") == [("running", 1, "a")]
    assert delays == [0.25, 0.5]


def test_http_reporter_gives_up_after_its_attempts() -> None:
    delays: list[float] = []
    with CloudClient(f"http://127.0.0.1:{free_port()}") as client:
        reporter = HttpReporter(client, attempts=3, backoff=0.1, sleep=delays.append)
        with pytest.raises(Retryable, match="cannot reach the cloud"):
            reporter.report_shard("s1", report("running"))
    assert delays == [0.1, 0.2]


def test_reports_wait_in_the_outbox_while_the_cloud_is_away_and_keep_their_order(
        cloud: StubCloud, outbox: ReportOutbox) -> None:
    with CloudClient(cloud.url) as client:
        direct = HttpReporter(client, attempts=1)
        reporter = OutboxReporter(direct, outbox)
        cloud.fail_next = 1
        reporter.report_shard("s1", report("running"))  # refused: queued
        reporter.report_shard("s1", report("succeeded"))  # queued behind, though the cloud is back
        assert outbox.size() == 2 and cloud.reports == []

        assert outbox.flush(direct) == 2

    assert cloud.statuses("s1") == [("running", 1, "a"), ("succeeded", 1, "a")]
    assert outbox.size() == 0


def test_flush_stops_at_the_first_retryable_and_keeps_the_rest(
        cloud: StubCloud, outbox: ReportOutbox) -> None:
    outbox.push("s1", report("running"))
    outbox.push("s1", report("succeeded"))
    with CloudClient(cloud.url) as client:
        cloud.fail_next = 1
        assert outbox.flush(HttpReporter(client, attempts=1)) == 0
        assert outbox.size() == 2
        assert outbox.flush(HttpReporter(client, attempts=1)) == 2
    assert [s for s, _a, _n in cloud.statuses("s1")] == ["running", "succeeded"]


def test_a_report_the_cloud_refuses_for_good_is_dropped(cloud: StubCloud, outbox: ReportOutbox) -> None:
    cloud.refuse_reports = True
    with CloudClient(cloud.url) as client:
        direct = HttpReporter(client, attempts=3, sleep=lambda _s: None)
        OutboxReporter(direct, outbox).report_shard("s1", report("running"))
        assert outbox.size() == 0
        outbox.push("s1", report("succeeded"))
        assert outbox.flush(direct) == 1
    assert outbox.size() == 0 and cloud.reports == []


def test_the_outbox_reporter_never_raises_when_redis_is_down_too() -> None:
    dead = dead_redis()
    with CloudClient(f"http://127.0.0.1:{free_port()}") as client:
        reporter = OutboxReporter(HttpReporter(client, attempts=1), ReportOutbox(SiteState(dead, "gw"), "a"))
        reporter.report_shard("s1", report("running"))  # logged as lost, not raised
    dead.close()


def test_held_running_reports_start_no_thread_each_and_go_when_due() -> None:
    """Given many short attempts' running reports held at once, then one releaser thread
    holds them all; the ones whose attempt ended are never sent, the others go when due,
    each before its attempt's later report."""
    memory = MemoryReporter()
    reporter = ShortShardReporter(memory, delay=0.3)
    threads_before = threading.active_count()
    for i in range(40):
        reporter.report_shard(f"s{i}", {"attempt": 1, "status": "running"})
    assert threading.active_count() <= threads_before + 1 and reporter.held() == 40
    for i in range(0, 40, 2):  # the even ones end at once
        reporter.report_shard(f"s{i}", {"attempt": 1, "status": "succeeded"})
    wait_for(lambda: reporter.held() == 0, timeout=5, what="the held reports released")
    for i in range(40):
        expected = ["succeeded"] if i % 2 == 0 else ["running"]
        assert memory.statuses(f"s{i}") == expected
    reporter.report_shard("s1", {"attempt": 1, "status": "succeeded"})
    assert memory.statuses("s1") == ["running", "succeeded"]


def test_a_report_held_behind_an_earlier_one_goes_when_due_without_a_wake_up() -> None:
    """Given a held report and, later, a second one (the releaser is not woken for it: it
    already waits for the first), then each goes out about ``delay`` s after it was held,
    not before, and at most one release tick late."""
    sent: dict[str, float] = {}

    def note_sent(shard_id: str, _report: dict[str, Any]) -> None:
        sent.setdefault(shard_id, time.monotonic())

    memory = MemoryReporter(on_report=note_sent)
    reporter = ShortShardReporter(memory, delay=0.3)
    held_at = {"first": time.monotonic()}
    reporter.report_shard("first", {"attempt": 1, "status": "running"})
    time.sleep(0.1)
    held_at["second"] = time.monotonic()
    reporter.report_shard("second", {"attempt": 1, "status": "running"})
    wait_for(lambda: reporter.held() == 0, timeout=5, what="both held reports released")
    for shard in ("first", "second"):
        late = sent[shard] - held_at[shard] - 0.3
        assert -0.01 <= late <= RELEASE_TICK + 0.25, (shard, late)  # 0.25: a loaded machine's wake-up
