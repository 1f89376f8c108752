"""The outbox sender against a real cloud and a real Redis: batches, an outage, replays.

Workers queue reports; the node's one sender delivers them in batches. The cloud is
stopped with reports queued and started again on the same database and port:
nothing is lost, nothing is counted twice (a batch sent again changes nothing).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis as redis_lib

from dmg.cloud.client import CloudClient
from dmg.site.state import SiteState
from tests.cloud.conftest import Cloud, launch, make_pipeline, make_site, place
from tests.waiting import wait_for
from tests.workers.support import StubCloud
from workers.run.outbox import OutboxReporter, OutboxSender, ReportOutbox, batch_items
from workers.run.reporter import HttpReporter, MemoryReporter, ShortShardReporter


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    server = launch(tmp_path / "cloud")
    try:
        yield server
    finally:
        server.stop()


def files(shard: str, *names: str) -> list[dict[str, object]]:
    return [{"path": f"{shard}/{n}", "bytes": 1, "status": "copied"} for n in names]


def test_reports_survive_a_cloud_restart_and_count_once(cloud: Cloud, redis_client: redis_lib.Redis,
                                                       tmp_path: Path) -> None:
    with cloud.user() as user:
        site = make_site(user, nodes=("d", "w"))
        run_id = user.run_pipeline(make_pipeline(user, site.gateway))["id"]
    with cloud.node(site.tokens["d"]) as d:
        [activity] = d.claim_activity_runs(epoch=1, wait=0)
        shards = [f"{activity['id']}-{i}" for i in range(3)]
        d.plan_shards(activity["id"], epoch=1, shards=[{"id": s, "index": i, "files": 2}
                                                        for i, s in enumerate(shards)])
        for shard in shards:
            place(d, shard, "w", epoch=1)
    outbox = ReportOutbox(SiteState(redis_client, site.gateway), "w")
    client = CloudClient(cloud.url, token=site.tokens["w"])
    worker = OutboxReporter(HttpReporter(client, attempts=1), outbox, queue_first=True)
    sender = OutboxSender(outbox, client, HttpReporter(client, attempts=1), poll=0.02, retry_wait=0.05,
                          max_backoff=0.3)
    base = {"attempt": 1, "node": "w", "started_at": 10.0}
    done = {**base, "status": "succeeded", "files": 2, "bytes": 2}
    sender.start()
    try:
        for shard in shards[:2]:
            worker.report_shard(shard, {**base, "status": "running", "files": 0})
            worker.report_shard(shard, {**done, "file_results": files(shard, "a", "b")})
        wait_for(lambda: outbox.size() == 0, timeout=20, what="the first reports delivered")

        # Given the cloud stopped, when the last shard ends, then its report waits.
        port = urlsplit(cloud.url).port
        cloud.stop()
        worker.report_shard(shards[2], {**done, "file_results": files(shards[2], "a", "b")})
        worker.report_shard(shards[0], {**done, "file_results": files(shards[0], "a", "b")})  # a replay
        wait_for(sender.stuck, timeout=20, what="the sender to see the cloud away")
        assert outbox.size() == 2

        restarted = launch(tmp_path / "cloud", db=cloud.db_url, bind=f"127.0.0.1:{port}")
        try:
            wait_for(lambda: outbox.size() == 0, timeout=30, what="the queued reports delivered")
            wait_for(lambda: not sender.stuck(), timeout=10, what="the sender to recover")
            with restarted.user() as user:
                shown = user.run(run_id)
                report = user.run_report(run_id)
            assert shown["status"] == "Succeeded" and shown["files"] == 6
            assert sorted(r["path"] for r in report) == sorted(f"{s}/{n}" for s in shards for n in "ab")
        finally:
            restarted.stop()
    finally:
        sender.stop()
        client.close()


def test_a_cloud_without_the_batch_route_gets_reports_one_by_one(redis_client: redis_lib.Redis) -> None:
    outbox = ReportOutbox(SiteState(redis_client, "gw"), "a")
    with StubCloud() as stub, CloudClient(stub.url) as client:
        outbox.push("s1", {"attempt": 1, "node": "a", "status": "running"})
        outbox.push("s1", {"attempt": 1, "node": "a", "status": "succeeded"})
        sender = OutboxSender(outbox, client, HttpReporter(client, attempts=1))
        assert sender.send_once().settled == 2
    assert stub.statuses("s1") == [("running", 1, "a"), ("succeeded", 1, "a")] and outbox.size() == 0


def test_a_running_report_superseded_in_its_batch_is_not_sent() -> None:
    entries = [{"shard_id": "s1", "report": {"attempt": 1, "status": "running"}},
               {"shard_id": "s2", "report": {"attempt": 1, "status": "running"}},
               {"shard_id": "s1", "report": {"attempt": 1, "status": "succeeded",
                                             "file_results": [{"path": str(i)} for i in range(2500)]}}]
    items, owners = batch_items(entries)
    assert [(i["shard_id"], i.get("report", {}).get("status"), len(i.get("files", {}).get("files", [])))
            for i in items] == [("s2", "running", 0), ("s1", None, 1000), ("s1", None, 1000),
                                ("s1", "succeeded", 500)]
    assert owners == [1, 2, 2, 2]


def test_a_short_shard_sends_only_its_final_report() -> None:
    memory = MemoryReporter()
    reporter = ShortShardReporter(memory, delay=0.3)
    reporter.report_shard("short", {"attempt": 1, "status": "running"})
    reporter.report_shard("long", {"attempt": 1, "status": "running"})
    reporter.report_shard("short", {"attempt": 1, "status": "succeeded"})
    assert memory.statuses("short") == ["succeeded"]
    wait_for(lambda: memory.statuses("long") == ["running"], timeout=5, what="the held report released")
    reporter.report_shard("long", {"attempt": 1, "status": "succeeded"})
    assert memory.statuses("long") == ["running", "succeeded"]
