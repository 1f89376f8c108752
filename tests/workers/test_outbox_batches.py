"""The outbox sender against a real cloud and a real Redis: batches, an outage, replays.

Workers queue reports; the node's one sender delivers them in batches. The cloud is
stopped with reports queued and started again on the same database and port:
nothing is lost, nothing is counted twice (a batch sent again changes nothing). A
report whose placement died with its dispatcher waits alone (held), across a Redis
restart, until the next dispatcher sends the placement from Redis.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis as redis_lib

from dispatcher.reports import PlacementOutbox, PlacementSender
from dmg.cloud.client import CloudClient
from dmg.cloud.filerows import ROW_FIELDS, as_row
from dmg.definitions import MAX_ITEMS
from dmg.embedded.redis import EmbeddedRedis
from dmg.procs import free_port
from dmg.site.boundary import SiteRedis
from dmg.site.state import SiteState
from dmg.transfer import FileResult
from tests.cloud.conftest import Cloud, Site, launch, make_pipeline, make_site, place
from tests.dispatcher.test_plan_round_trips import CountingConnection
from tests.waiting import wait_for
from tests.workers.support import StubCloud
from workers.run.outbox import (
    HELD_MAX_WAIT,
    HELD_WAIT,
    ITEM_VALUES,
    OutboxReporter,
    OutboxSender,
    ReportOutbox,
    batch_items,
    json_values,
)
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


def planned_on_w(cloud: Cloud, *, shards: int, files: int) -> tuple[Site, str, list[str]]:
    """A gateway of nodes d (its dispatcher, epoch 1) and w, a run of one activity planned as
    ``shards`` shards of ``files`` files each, every shard placed on w."""
    with cloud.user() as user:
        site = make_site(user, nodes=("d", "w"))
        run_id = user.run_pipeline(make_pipeline(user, site.gateway))["id"]
    with cloud.node(site.tokens["d"]) as d:
        [activity] = d.claim_activity_runs(epoch=1, wait=0)
        ids = [f"{activity['id']}-{i}" for i in range(shards)]
        d.plan_shards(activity["id"], epoch=1, shards=[{"id": s, "index": i, "files": files}
                                                        for i, s in enumerate(ids)])
        for shard in ids:
            place(d, shard, "w", epoch=1)
    return site, run_id, ids


def test_reports_survive_a_cloud_restart_and_count_once(cloud: Cloud, redis_client: redis_lib.Redis,
                                                       tmp_path: Path) -> None:
    site, run_id, shards = planned_on_w(cloud, shards=3, files=2)
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


def test_a_report_whose_placement_died_with_its_dispatcher_waits_alone_across_a_redis_restart(
        cloud: Cloud, tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", free_port()).start()
    redis = SiteRedis.from_url(server.url)
    with cloud.user() as user:
        site = make_site(user, nodes=("d", "w"))
        run_id = user.run_pipeline(make_pipeline(user, site.gateway))["id"]
    state = SiteState(redis, site.gateway)
    redis.set(state.keys.epoch, 1)
    with cloud.node(site.tokens["d"]) as d:
        [activity] = d.claim_activity_runs(epoch=1, wait=0)
        s0, s1, s2 = shards = [f"{activity['id']}-{i}" for i in range(3)]
        d.plan_shards(activity["id"], epoch=1, shards=[{"id": s, "index": i, "files": 2}
                                                        for i, s in enumerate(shards)])
        place(d, s0, "w", epoch=1)
        place(d, s2, "w", epoch=1)
    # Given s1's placement recorded in Redis by a dispatcher SIGKILLed before it sent it,
    PlacementOutbox(state).report_shard(s1, {"attempt": 1, "node": "w", "status": "placed", "epoch": 1})
    outbox = ReportOutbox(state, "w")
    client = CloudClient(cloud.url, token=site.tokens["w"])
    dispatcher = CloudClient(cloud.url, token=site.tokens["d"])
    worker = OutboxReporter(HttpReporter(client, attempts=1), outbox, queue_first=True)
    sender = OutboxSender(outbox, client, HttpReporter(client, attempts=1), poll=0.02, retry_wait=0.05,
                          max_backoff=0.3)
    successor = PlacementSender(state, dispatcher, epoch=lambda: 2, poll=0.02, backoff=0.05)
    done = {"attempt": 1, "node": "w", "started_at": 10.0, "status": "succeeded", "files": 2, "bytes": 2}
    sender.start()
    try:
        # When the worker ran it and reports it first, then the two others,
        for shard in (s1, s0, s2):
            worker.report_shard(shard, {**done, "file_results": files(shard, "a", "b")})

        # Then s1's report waits alone, and the others are delivered.
        with cloud.user() as user:
            wait_for(lambda: [s["status"] for s in user.run(run_id)["activity_runs"][0]["shards"]]
                     == ["succeeded", "planned", "succeeded"], timeout=20, what="s0 and s2 delivered")
        assert outbox.size() == 0 and list(outbox.held()) == [s1] and not sender.stuck()

        # And when Redis restarts with the report and the placement waiting in it, and the
        # next dispatcher (epoch 2) sends the placement, then s1's report lands too, once.
        server.restart()
        redis.set(state.keys.epoch, 2)
        successor.start()
        with cloud.user() as user:
            wait_for(lambda: user.run(run_id)["status"] == "Succeeded", timeout=30, what="the run done")
            shown, report, tries = user.run(run_id), user.run_report(run_id), user.run_attempts(run_id)
        wait_for(lambda: not outbox.held(), timeout=10, what="nothing held")
        assert shown["files"] == 6 and len(report) == 6
        assert [(a["shard_id"], a["node"], a["status"]) for a in tries] == [
            (s, "w", "succeeded") for s in shards]
        assert PlacementOutbox(state).pending() == 0
    finally:
        successor.stop()
        sender.stop()
        client.close()
        dispatcher.close()
        redis.close()
        server.stop()


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


class NotYetCloud:
    """Answers every item "retry" (its placement is not known) until ``known`` names it."""

    def __init__(self) -> None:
        self.known: set[str] = set()
        self.sent: list[list[str]] = []

    def report_batch(self, items: list[dict[str, object]]) -> dict[str, object]:
        self.sent.append([str(i["shard_id"]) for i in items])
        results = [{"shard_id": i["shard_id"], "ok": i["shard_id"] in self.known,
                    "retry": i["shard_id"] not in self.known} for i in items]
        return {"applied": len(items), "results": results}


def test_held_reports_keep_their_shards_order_back_off_and_are_counted_while_they_wait(
        redis_client: redis_lib.Redis) -> None:
    outbox, cloud = ReportOutbox(SiteState(redis_client, "gw"), "w"), NotYetCloud()
    cloud.known = {"s2"}
    outbox.push("s1", {"attempt": 1, "status": "running"})
    outbox.push("s2", {"attempt": 1, "status": "succeeded"})
    assert outbox.send_batch(cloud, now=100.0).settled == 2
    assert list(outbox.held()) == ["s1"] and outbox.size() == 0
    # A later report of the held shard waits behind it, not sent before its due time.
    outbox.push("s1", {"attempt": 1, "status": "succeeded"})
    outbox.send_batch(cloud, now=100.0 + HELD_WAIT / 2)
    assert cloud.sent == [["s1", "s2"]] and [len(h["entries"]) for h in outbox.held().values()] == [2]
    assert outbox.held()["s1"]["due"] == pytest.approx(100.0 + HELD_WAIT)
    # due: both sent, in order; held again for twice as long
    outbox.send_batch(cloud, now=100.0 + HELD_WAIT)
    assert cloud.sent[-1] == ["s1"] and outbox.held()["s1"]["due"] == pytest.approx(100.0 + 3 * HELD_WAIT)
    assert outbox.held_since(100.0 + 1) == 1 and outbox.held_since(99.0) == 0
    cloud.known.add("s1")
    outbox.send_batch(cloud, now=101.0)
    assert outbox.held() == {} and outbox.size() == 0


def test_a_held_report_is_tried_again_within_tens_of_milliseconds_then_less_often(
        redis_client: redis_lib.Redis) -> None:
    # A short shard's final report that overtook its placement (in flight from the lease
    # holder, within its 20 ms linger) is sent again soon, not a quarter of a second later;
    # a placement that does not come is asked for less and less often, up to HELD_MAX_WAIT.
    assert HELD_WAIT <= 0.05
    outbox, cloud = ReportOutbox(SiteState(redis_client, "gw"), "w"), NotYetCloud()
    sender = OutboxSender(outbox, cloud, MemoryReporter())  # its default waits
    outbox.push("s1", {"attempt": 1, "status": "succeeded"})
    assert 0 < sender._step() <= HELD_WAIT  # held: the next look when it falls due
    waits = []
    for _ in range(10):  # each time it falls due, the cloud still cannot take it
        at = outbox.held()["s1"]["due"]
        outbox.send_batch(cloud, now=at)
        waits.append(outbox.held()["s1"]["due"] - at)
    assert waits[1] == pytest.approx(2 * waits[0]) and max(waits) == pytest.approx(HELD_MAX_WAIT)
    cloud.known.add("s1")
    outbox.send_batch(cloud, now=at + HELD_MAX_WAIT)
    assert outbox.held() == {} and cloud.sent[-1] == ["s1"]


def test_a_removed_node_s_last_reports_reach_the_cloud_through_the_dispatcher(
        cloud: Cloud, redis_client: redis_lib.Redis) -> None:
    """A node removed at the cloud while it ran a shard commits it just as its token stops
    working: its report and file results are refused. They go to the site's Redis, the
    dispatcher relays them, and the shard (and so its run) ends at the cloud, with its
    per-file report. Without the relay the run would stay Running for good (a CI flake of
    tests/ha/test_drain.py showed it)."""
    with cloud.user() as user:
        site = make_site(user, nodes=("d", "w", "x"))
        run_id = user.run_pipeline(make_pipeline(user, site.gateway))["id"]
    state = SiteState(redis_client, site.gateway)
    redis_client.set(state.keys.epoch, 1)
    with cloud.node(site.tokens["d"]) as d:
        [activity] = d.claim_activity_runs(epoch=1, wait=0)
        s0, s1 = shards = [f"{activity['id']}-{i}" for i in range(2)]
        d.plan_shards(activity["id"], epoch=1, shards=[{"id": s, "index": i, "files": 2}
                                                        for i, s in enumerate(shards)])
        place(d, s0, "w", epoch=1)
        place(d, s1, "d", epoch=1)
    outbox = ReportOutbox(state, "w")
    client = CloudClient(cloud.url, token=site.tokens["w"])
    dispatcher = CloudClient(cloud.url, token=site.tokens["d"])
    sender = OutboxSender(outbox, client, HttpReporter(client, attempts=1))
    done = {"attempt": 1, "started_at": 10.0, "status": "succeeded", "files": 2, "bytes": 2}
    try:
        outbox.push(s0, {**done, "node": "w", "status": "running", "files": 0})
        assert sender.send_once().settled == 1
        dispatcher.report_shard(s1, {**done, "node": "d"})  # d ran s1 itself
        # Given w removed at the cloud right after it committed s0,
        with cloud.user() as user:
            user.remove_node(site.gateway, "w")
        outbox.push(s0, {**done, "node": "w", "file_results": files(s0, "a", "b")})

        # When its sender meets the refused token, the report moves to the site's list,
        outcome = sender.send_once()
        assert outcome.settled == 1 and outbox.size() == 0
        assert PlacementOutbox(state).pending() == 1

        # A node that is not the dispatcher cannot relay (x: a registered node, no lease),
        with cloud.node(site.tokens["x"]) as x:
            answer = x.report_batch([{"shard_id": s0, "relayed_for": "w", "epoch": 1,
                                      "report": {**done, "node": "w"}}])
            assert not answer["results"][0]["ok"]
        # and the dispatcher cannot report for a node that is still registered.
        answer = dispatcher.report_batch([{"shard_id": s1, "relayed_for": "x", "epoch": 1,
                                           "report": {**done, "node": "x"}}])
        assert answer["results"][0]["error"] == "permission_denied"

        # Then the dispatcher sends it, and the run ends with s0's files in its report.
        assert PlacementSender(state, dispatcher, epoch=lambda: 1).send_once(1) == "sent"
        assert PlacementOutbox(state).pending() == 0
        with cloud.user() as user:
            shown, report, tries = user.run(run_id), user.run_report(run_id), user.run_attempts(run_id)
        assert shown["status"] == "Succeeded", shown
        assert sorted(r["path"] for r in report if r["path"].startswith(s0)) == [f"{s0}/a", f"{s0}/b"]
        assert {(a["shard_id"], a["node"], a["status"]) for a in tries} == {
            (s0, "w", "succeeded"), (s1, "d", "succeeded")}
    finally:
        client.close()
        dispatcher.close()
def full_results(shard: str, count: int, *, attempt: int = 1) -> list[dict[str, object]]:
    """File results as a copy shard queues them: every field of FileResult, node and attempt."""
    return [{**FileResult(f"{shard}/f{i:04d}.bin", 8192, f"xxh3:{i:032x}", "copied", source=f"f{i:04d}.bin",
                          verified="size,xxh3", tries=1, started=100.0 + i, ended=100.5 + i).to_json(),
             "node": "w", "attempt": attempt} for i in range(count)]


def test_big_file_reports_go_in_batches_the_cloud_takes_and_the_report_is_the_same(
        cloud: Cloud, redis_client: redis_lib.Redis) -> None:
    # Given 8 shards whose final reports carry 450 full file results each (36,000 values
    # together, more than the cloud takes in one body), one shard reported the old way.
    site, run_id, shards = planned_on_w(cloud, shards=9, files=450)
    outbox = ReportOutbox(SiteState(redis_client, site.gateway), "w")
    done = {"attempt": 1, "node": "w", "started_at": 10.0, "status": "succeeded", "files": 450,
            "bytes": 450 * 8192}
    with CloudClient(cloud.url, token=site.tokens["w"]) as client:
        HttpReporter(client, attempts=1).report_shard(shards[8], {**done, "file_results": full_results(
            "same", 450)})
        for shard in shards[:8]:
            outbox.push(shard, {**done, "file_results": full_results(shard, 450)})
        sent: list[int] = []

        class Counting:
            def report_batch(self, items: list[dict[str, object]]) -> dict[str, object]:
                sent.append(json_values({"items": items}))
                return client.report_batch(items)

        # When the sender sends them,
        while outbox.size():
            outcome = outbox.send_batch(Counting())
            assert outcome.settled and not outcome.unsupported and not outcome.wait
    # Then no request was refused (each within the cloud's limit), they took few requests,
    assert all(n <= MAX_ITEMS for n in sent) and 2 <= len(sent) <= 4, sent
    with cloud.user() as user:
        shown = user.run(run_id)
        report = user.run_report(run_id)
    assert shown["status"] == "Succeeded" and shown["files"] == 9 * 450
    # and a compact report's rows are those of a full one, field for field.
    rows: dict[str, list[dict[str, object]]] = {}
    for row in report:
        rows.setdefault(str(row["shard"]), []).append(row)
    same_fields = ("bytes", "checksum", "status", "verified", "error", "node", "attempt", "tries",
                   "started_at", "ended_at", "source")
    full = sorted(rows[shards[8]], key=lambda r: str(r["path"]))
    for shard in shards[:8]:
        compact = sorted(rows[shard], key=lambda r: str(r["path"]))
        assert [r["path"] for r in compact] == [f"{shard}/f{i:04d}.bin" for i in range(450)]
        assert [{k: r[k] for k in same_fields} for r in compact] == [{k: r[k] for k in same_fields}
                                                                     for r in full]


def test_a_file_result_is_queued_and_sent_as_a_row_without_the_envelope_s_fields(
        redis_client: redis_lib.Redis) -> None:
    # Given a report with a full file result (node and attempt stamped on it)
    outbox = ReportOutbox(SiteState(redis_client, "gw"), "w")
    [result] = full_results("s", 1)
    # When it is queued and becomes a batch item
    outbox.push("s", {"attempt": 1, "node": "w", "status": "running", "file_results": [result]})
    [raw] = redis_client.lrange(outbox.key, 0, -1)
    items, _ = batch_items([json.loads(raw)])
    # Then the file result travels as one row of the cloud's fields (11 JSON values, not ~19)
    row = [result[name] for name in ROW_FIELDS]
    assert items[0]["files"] == {"attempt": 1, "node": "w", "rows": [row]}
    assert json_values(row) == 1 + len(ROW_FIELDS)
    assert json_values({"a": [1, {"b": ""}]}) == 7  # as the cloud's check_shape counts


def test_the_file_result_defaults_the_outbox_leaves_out_are_the_cloud_s() -> None:
    """The node leaves out of a file result what the cloud fills in; the node does not import
    the cloud's schemas (pydantic), so the defaults are a constant kept equal here."""
    from dmg.cloud.limits import FILE_RESULT_DEFAULTS, MAX_BODY_VALUES
    from dmg.cloud.schemas import FileResultIn
    from dmg.definitions import MAX_ITEMS
    assert MAX_BODY_VALUES == MAX_ITEMS
    assert {name: field.default for name, field in FileResultIn.model_fields.items()
                                    if not field.is_required()} == FILE_RESULT_DEFAULTS


@contextlib.contextmanager
def idle_sender_on_w(cloud: Cloud, redis_client: redis_lib.Redis, *,
                     files: int) -> Iterator[tuple[str, str, ReportOutbox, OutboxReporter, OutboxSender]]:
    """A shard of ``files`` files placed on w, w's outbox, a worker queueing into it and w's
    sender, started and idle, whose batches gather for 3 s (poll): (run id, shard, outbox,
    worker, sender)."""
    with idle_sender_with_shards(cloud, redis_client, shards=1, files=files) as (run_id, [shard], *rest):
        yield (run_id, shard, *rest)


@contextlib.contextmanager
def idle_sender_with_shards(cloud: Cloud, redis_client: redis_lib.Redis, *, shards: int, files: int,
                            ) -> Iterator[tuple[str, list[str], ReportOutbox, OutboxReporter, OutboxSender]]:
    """:func:`idle_sender_on_w` with ``shards`` shards of ``files`` files each."""
    site, run_id, shard_ids = planned_on_w(cloud, shards=shards, files=files)
    outbox = ReportOutbox(SiteState(redis_client, site.gateway), "w")
    client = CloudClient(cloud.url, token=site.tokens["w"])
    worker = OutboxReporter(HttpReporter(client, attempts=1), outbox, queue_first=True)
    sender = OutboxSender(outbox, client, HttpReporter(client, attempts=1), poll=3.0)
    sender.start()
    try:
        wait_for(lambda: sender._idle or None, timeout=10, what="the sender to go idle")
        yield run_id, shard_ids, outbox, worker, sender
    finally:
        sender.stop()
        client.close()


def test_an_idle_sender_sends_a_final_report_at_once(cloud: Cloud, redis_client: redis_lib.Redis) -> None:
    # given an idle sender whose batches gather for 3 s (poll), and a shard placed on w
    with idle_sender_on_w(cloud, redis_client, files=1) as (run_id, shard, outbox, worker, sender):
        # when the shard's one final report is queued
        queued = time.monotonic()
        worker.report_shard(shard, {"attempt": 1, "node": "w", "status": "succeeded", "files": 1, "bytes": 1,
                                    "started_at": 10.0, "file_results": files(shard, "a")})
        # then it reaches the cloud at once, not after the 3 s poll
        with cloud.user() as user:
            wait_for(lambda: user.run(run_id)["status"] == "Succeeded" or None, timeout=10, interval=0.01,
                     what="the run to end")
        assert time.monotonic() - queued < 1.0
        # the sender drops the report from the outbox once the cloud's answer is back, which
        # can be just after the run reads Succeeded
        wait_for(lambda: outbox.size() == 0 or None, timeout=5, interval=0.01,
                 what="the sent report to leave the outbox")
        assert redis_client.llen(outbox.wake_key) == 0  # the wake-up was read
        assert not sender._gathering  # no streamed results: its pause is a plain one (no Redis)


def test_after_one_streamed_shard_s_final_report_the_next_one_s_still_goes_when_asked_to_flush(
        cloud: Cloud, redis_client: redis_lib.Redis) -> None:
    # given a sender whose batches gather for 3 s (poll), and two shards placed on w that
    # streamed file results (a batch of their running reports went)
    with idle_sender_with_shards(cloud, redis_client, shards=2, files=2) as (run_id, shards, outbox, worker,
                                                                         _sender):
        first, second = shards
        for shard in shards:
            worker.report_shard(shard, {"attempt": 1, "node": "w", "status": "running", "files": 1,
                                        "bytes": 1, "started_at": 10.0, "file_results": files(shard, "a")})
        wait_for(lambda: outbox.size() == 0 or None, timeout=10, interval=0.01, what="the batch to go")
        # when the first shard ends (its final report alone in a batch, a flush asked) ...
        worker.report_shard(first, {"attempt": 1, "node": "w", "status": "succeeded", "files": 2, "bytes": 2,
                                    "started_at": 10.0, "file_results": files(first, "b")})
        worker.flush()
        wait_for(lambda: outbox.size() == 0 or None, timeout=10, interval=0.01, what="the first end to go")
        # ... and then the second, its final report reaches the cloud at once too, not after
        # the 3 s pause that follows a batch of final reports alone
        assert _ended_after_its_final_report(cloud, run_id, worker, second) < 1.0


def _ended_after_its_final_report(cloud: Cloud, run_id: str, worker: OutboxReporter, shard: str) -> float:
    """Queue ``shard``'s final report with a flush, as a worker's end of a streamed shard
    does; -> the seconds until the cloud shows the run Succeeded."""
    queued = time.monotonic()
    worker.report_shard(shard, {"attempt": 1, "node": "w", "status": "succeeded", "files": 2, "bytes": 2,
                                "started_at": 10.0, "file_results": files(shard, "b")})
    worker.flush()
    with cloud.user() as user:
        wait_for(lambda: user.run(run_id)["status"] == "Succeeded" or None, timeout=10, interval=0.01,
                 what="the run to end")
    return time.monotonic() - queued


def test_a_gathering_sender_sends_a_streamed_shard_s_final_report_when_asked_to_flush(
        cloud: Cloud, redis_client: redis_lib.Redis) -> None:
    # given a sender whose batches gather for 3 s (poll), busy: it just sent a shard's
    # running report with file results (a batch that was not full)
    with idle_sender_on_w(cloud, redis_client, files=2) as (run_id, shard, outbox, worker, sender):
        worker.report_shard(shard, {"attempt": 1, "node": "w", "status": "running", "files": 1, "bytes": 1,
                                    "started_at": 10.0, "file_results": files(shard, "a")})
        wait_for(lambda: outbox.size() == 0 or None, timeout=10, interval=0.01, what="the batch to go")
        assert sender._gathering
        # when the shard's final report is queued and a flush asked (the worker's end of a
        # shard that streamed its file results), then it reaches the cloud at once, not after
        # the 3 s the sender lets reports gather
        assert _ended_after_its_final_report(cloud, run_id, worker, shard) < 1.0
        wait_for(lambda: redis_client.llen(outbox.flush_key) == 0 or None, timeout=5, interval=0.01,
                 what="the flush to be read")


def test_a_batch_item_carries_the_file_results_as_the_entry_holds_them() -> None:
    # Given an outbox entry an earlier node queued (objects, compact or in full) and one of rows
    compact = {"path": "a", "bytes": 1, "status": "copied"}
    full = {"path": "b", "source": "", "bytes": 0, "checksum": "", "status": "skipped", "verified": "",
            "error": "", "tries": 0, "started": None, "ended": None}
    old = {"shard_id": "s1", "report": {"attempt": 1, "status": "running", "file_results": [compact, full]}}
    rows = {"shard_id": "s2",
            "report": {"attempt": 1, "status": "running", "file_results": [as_row(compact)]}}
    # When they become batch items, Then they go as they are (the cloud takes either), with the envelope
    items, owners = batch_items([old, rows])
    assert items[0]["files"] == {"attempt": 1, "node": None, "files": [compact, full]}
    assert items[1]["files"] == {"attempt": 1, "node": None, "rows": [as_row(compact)]} and owners == [0, 1]
    assert json_values(items[0]) <= json_values(old) + ITEM_VALUES


def test_a_cloud_that_takes_no_rows_gets_the_file_results_as_objects_one_by_one(
        redis_client: redis_lib.Redis) -> None:
    # Given a cloud without the batch route (nor rows), and a report queued with its file results as rows
    outbox = ReportOutbox(SiteState(redis_client, "gw"), "a")
    [result] = full_results("s1", 1)
    with StubCloud() as stub, CloudClient(stub.url) as client:
        outbox.push("s1", {"attempt": 1, "node": "a", "status": "succeeded", "file_results": [result]})
        # When the sender sends it
        assert OutboxSender(outbox, client, HttpReporter(client, attempts=1)).send_once().settled == 1
    # Then the file results went on the single route as objects, every field as the worker made it
    assert stub.files == [("s1", {"attempt": 1, "node": "a", "files": [
        {k: v for k, v in result.items() if k not in ("node", "attempt")}]})]
    assert stub.statuses("s1") == [("succeeded", 1, "a")] and outbox.size() == 0


def test_a_batch_costs_two_round_trips_a_read_and_its_settlement(redis_url: str) -> None:
    # Given an outbox holding a held report and a fresh one, on a client counting round trips
    client = SiteRedis.from_url(redis_url, connection_class=CountingConnection)
    outbox, cloud = ReportOutbox(SiteState(client, "gw"), "w"), NotYetCloud()
    outbox.push("s1", {"attempt": 1, "status": "running"})
    outbox.send_batch(cloud, now=100.0)  # s1 held until 100.25
    outbox.push("s2", {"attempt": 1, "status": "succeeded"})
    cloud.known = {"s1", "s2"}

    # When a batch goes with both
    before = CountingConnection.sent
    assert outbox.send_batch(cloud, now=101.0).settled == 1

    # Then it read the held reports and the outbox's head together, and settled in one MULTI
    assert CountingConnection.sent - before == 2
    assert cloud.sent[-1] == ["s1", "s2"] and outbox.held() == {} and outbox.size() == 0
    client.close()
