"""Report batches applied with Core statements (``dmg/cloud/service/reportcore.py``), on
SQLite and PostgreSQL.

A worker's batch of final reports with file results builds no ORM object; a batch of
many shards sent again after a lost answer counts once; a batch mixing a
stale attempt's report with current ones applies only the current ones (the stale one
is refused, its files not recorded, its attempt not counted); a node's report of an
attempt placed on another node is refused alone; after every batch the run's and the
activity runs' counters equal the aggregates of their rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import case, create_engine, event, func, select

from dmg.cloud.db import Database
from dmg.cloud.filerows import as_row
from dmg.cloud.models import ActivityRun, Base, FileRecord, Run, Shard, ShardAttempt
from dmg.cloud.schemas import FileResults, ReportItem
from dmg.cloud.service import CloudService
from settings import Settings
from tests.cloud.conftest import Cloud, claimed_run, launch, service_site


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def any_cloud(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """A cloud on SQLite, then one on PostgreSQL (a real server)."""
    db = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    server = launch(tmp_path_factory.mktemp(f"core-{request.param}"), db=db)
    try:
        yield server
    finally:
        server.stop()


def _shard_ids(ids: list[str], shards: int) -> list[str]:
    return [f"{a}-{i:05d}" for a in ids for i in range(shards)]


def _plans(ids: list[str], shards: int) -> list[dict[str, Any]]:
    return [{"plan": {"activity_run_id": a, "epoch": 1,
                      "shards": [{"id": f"{a}-{i:05d}", "index": i, "files": 1, "bytes": 7}
                                 for i in range(shards)]}}
            for a in ids]


def _placed(shard_id: str, *, attempt: int = 1, node: str = "w") -> dict[str, Any]:
    return {"shard_id": shard_id,
            "report": {"attempt": attempt, "status": "placed", "node": node, "epoch": 1}}


def _final(shard_id: str, *, attempt: int = 1, ok: bool = True) -> dict[str, Any]:
    """A worker's final report of a one-file shard with its file result, in one item."""
    status = "copied" if ok else "failed"
    return {"shard_id": shard_id,
            "files": {"attempt": attempt, "files": [{"path": f"{shard_id}/f", "bytes": 7, "status": status}]},
            "report": {"attempt": attempt, "status": "succeeded" if ok else "failed", "files": 1 if ok else 0,
                       "bytes": 7 if ok else 0, **({} if ok else {"error": "disk full"})}}


def _check_counters(db_url: str, run_id: str) -> dict[str, Any]:
    """Assert the run's and its activity runs' counters equal the aggregates of their rows
    -> the figures (file rows, attempt rows, per-activity counters, run counters)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as db:
            counted = db.execute(select(ActivityRun.shards_total, ActivityRun.shards_succeeded,
                                        ActivityRun.shards_failed, ActivityRun.files_done,
                                        ActivityRun.bytes_done)
                                 .where(ActivityRun.run_id == run_id).order_by(ActivityRun.id)).all()
            aggregates = db.execute(
                select(func.count(Shard.id),
                       func.coalesce(func.sum(case((Shard.status == "succeeded", 1), else_=0)), 0),
                       func.coalesce(func.sum(case((Shard.status == "failed", 1), else_=0)), 0),
                       func.coalesce(func.sum(Shard.files), 0), func.coalesce(func.sum(Shard.bytes), 0))
                .select_from(ActivityRun).outerjoin(Shard, Shard.activity_run_id == ActivityRun.id)
                .where(ActivityRun.run_id == run_id).group_by(ActivityRun.id).order_by(ActivityRun.id)).all()
            run = db.execute(select(Run.activities_total, Run.activities_queued, Run.activities_in_progress,
                                    Run.activities_succeeded, Run.activities_failed, Run.activities_cancelled,
                                    Run.files_done, Run.bytes_done).where(Run.id == run_id)).one()
            statuses = dict(db.execute(select(ActivityRun.status, func.count())
                                       .where(ActivityRun.run_id == run_id)
                                       .group_by(ActivityRun.status)).tuples().all())
            done = db.execute(select(func.coalesce(func.sum(ActivityRun.files_done), 0),
                                     func.coalesce(func.sum(ActivityRun.bytes_done), 0))
                              .where(ActivityRun.run_id == run_id)).one()
            files = db.scalar(select(func.count()).select_from(FileRecord)
                              .join(ActivityRun, FileRecord.activity_run_id == ActivityRun.id)
                              .where(ActivityRun.run_id == run_id))
            attempts = db.execute(select(ShardAttempt.shard_id, ShardAttempt.attempt, ShardAttempt.status,
                                         ShardAttempt.outcome)
                                  .join(ActivityRun, ShardAttempt.activity_run_id == ActivityRun.id)
                                  .where(ActivityRun.run_id == run_id)
                                  .order_by(ShardAttempt.shard_id, ShardAttempt.attempt)).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in counted] == [tuple(r) for r in aggregates]  # activity runs' counters
    expected = (sum(statuses.values()), statuses.get("Queued", 0), statuses.get("InProgress", 0),
                statuses.get("Succeeded", 0), statuses.get("Failed", 0), statuses.get("Cancelled", 0),
                *done)
    assert tuple(run) == expected, (tuple(run), expected)  # the run's counters
    return {"files": files, "attempts": [tuple(a) for a in attempts], "counted": [tuple(r) for r in counted],
            "run": tuple(run)}


def test_a_batch_of_many_shards_sent_again_counts_once(any_cloud: Cloud) -> None:
    cloud = any_cloud
    # Given 4 claimed activity runs of 6 one-file shards each, planned and placed in one batch
    site, run_id, ids = claimed_run(cloud, activities=4)
    shard_ids = _shard_ids(ids, 6)
    with cloud.node(site.tokens["d"]) as d, cloud.node(site.tokens["w"]) as w, cloud.user() as user:
        placed = d.report_batch(_plans(ids, 6) + [_placed(s) for s in shard_ids])
        assert all(r["ok"] for r in placed["results"]), placed
        _check_counters(cloud.db_url, run_id)
        # When the worker's batch ends every shard (one failed), and is sent again: its answer was lost
        finals = [_final(s, ok=s != shard_ids[7]) for s in shard_ids]
        first = w.report_batch(finals)
        figures = _check_counters(cloud.db_url, run_id)
        again = w.report_batch(finals)
        run = user.run(run_id)
    # Then both answers take every item, and the second changed nothing: no count, file or attempt twice
    assert all(r["ok"] for r in first["results"] + again["results"]), (first, again)
    assert _check_counters(cloud.db_url, run_id) == figures
    assert figures["files"] == 24 and len(figures["attempts"]) == 24
    assert figures["run"][3:5] == (3, 1) and figures["run"][6:] == (23, 23 * 7)  # 3 succeeded, 1 failed
    assert run["status"] == "Failed" and run["files"] == 23
    failed = next(a for a in run["activity_runs"] if a["id"] == ids[1])
    assert failed["status"] == "Failed" and "shard 1 failed on w: disk full" in failed["error"]


def test_a_stale_attempts_report_in_a_batch_is_refused_and_the_current_ones_apply(any_cloud: Cloud) -> None:
    cloud = any_cloud
    # Given an activity run of 2 shards: shard 0's attempt 1 was replaced by attempt 2 (on w again)
    site, run_id, ids = claimed_run(cloud, activities=1)
    old, other = _shard_ids(ids, 2)
    with cloud.node(site.tokens["d"]) as d, cloud.node(site.tokens["w"]) as w, cloud.user() as user:
        d.report_batch([*_plans(ids, 2), _placed(old), _placed(other), _placed(old, attempt=2)])
        # When the worker's batch carries the old attempt's final report, then the other
        # shard's and the new attempt's
        answer = w.report_batch([_final(old, attempt=1), _final(other), _final(old, attempt=2, ok=True)])
        results = answer["results"]
        # and the dispatcher (not the node the attempt was placed on) reports one of w's attempts
        foreign = d.report_batch([{"shard_id": other, "report": {"attempt": 1, "status": "failed",
                                                                  "error": "not mine"}}])["results"]
        run = user.run(run_id)
    # Then the stale report is refused for good (not retried), and only the current ones count
    assert results[0]["ok"] is False and results[0]["error"] == "stale_attempt"
    assert not results[0].get("retry")
    assert results[1]["ok"] and results[2]["ok"] and results[2]["attempt"] == 2
    assert foreign[0]["ok"] is False and foreign[0]["error"] == "permission_denied"
    figures = _check_counters(cloud.db_url, run_id)
    assert figures["counted"] == [(2, 2, 0, 2, 14)]
    assert figures["files"] == 2  # the stale attempt's file result was not recorded
    assert figures["attempts"] == [(old, 1, "placed", "fenced"), (old, 2, "succeeded", "succeeded"),
                                   (other, 1, "succeeded", "succeeded")]
    assert run["status"] == "Succeeded"


def test_a_bad_item_in_a_batch_is_a_clear_error_and_the_others_apply(any_cloud: Cloud) -> None:
    cloud = any_cloud
    # Given a planned and placed shard
    site, run_id, ids = claimed_run(cloud, activities=1)
    (shard,) = _shard_ids(ids, 1)
    with cloud.node(site.tokens["d"]) as d, cloud.node(site.tokens["w"]) as w:
        d.report_batch([*_plans(ids, 1), _placed(shard)])
        # When the worker's batch names an unknown shard and another gateway's id, then the good one
        answer = w.report_batch([_final("no-such-shard"), _final(f"{ids[0]}x-00000"), _final(shard)])
    results = answer["results"]
    # Then the unknown ones are refused with a one-line error, the good one applies
    assert [r["ok"] for r in results] == [False, False, True]
    assert results[0]["error"] == "not_found" and "\n" not in results[0]["message"]
    assert _check_counters(cloud.db_url, run_id)["counted"] == [(1, 1, 0, 1, 7)]


def test_a_worker_batch_builds_no_orm_object(tmp_path: Path) -> None:
    # Given a cloud service in this process (SQLite) with 5 one-shard activity runs planned
    # and placed on node w
    db = Database(f"sqlite:///{tmp_path / 'cloud.db'}")
    db.migrate()
    try:
        svc = CloudService(Settings(data_dir=tmp_path), db)
        d, w = service_site(svc, tmp_path, {"p": 5})
        run_id = svc.start_run("p")[1]["id"]
        ids = [a["id"] for a in svc.claim(d, epoch=1, limit=5)]
        shard_ids = _shard_ids(ids, 1)
        items = [ReportItem.model_validate(i) for i in [*_plans(ids, 1), *(_placed(s) for s in shard_ids)]]
        assert all(r["ok"] for r in svc.report_batch(d, items)["results"])
        loaded: list[object] = []

        def count(target: object, context: object) -> None:
            loaded.append(target)

        event.listen(Base, "load", count, propagate=True)
        try:
            # When the worker's batch ends them all, each with its file result
            answer = svc.report_batch(w, [ReportItem.model_validate(_final(s)) for s in shard_ids])
        finally:
            event.remove(Base, "load", count)
        # Then every item is taken, the run ended, and no ORM object was loaded for it
        assert all(r["ok"] for r in answer["results"]), answer
        assert loaded == []
        assert svc.run(run_id)["status"] == "Succeeded"
    finally:
        db.dispose()


def test_file_results_keep_every_field_on_each_path_and_a_newer_attempt_replaces(any_cloud: Cloud) -> None:
    cloud = any_cloud
    # Given a shard placed on w (attempt 1), then again (attempt 2)
    site, run_id, ids = claimed_run(cloud, activities=1)
    (shard,) = _shard_ids(ids, 1)
    full = {"source": "src/a", "bytes": 8192, "checksum": "xxh3:0123456789abcdef", "status": "failed",
            "verified": "xxh3", "error": "disk full", "tries": 3, "started": 1.7e9, "ended": 1.7e9 + 0.25}
    with cloud.node(site.tokens["d"]) as d, cloud.node(site.tokens["w"]) as w, cloud.user() as user:
        d.report_batch([*_plans(ids, 1), _placed(shard)])
        # When attempt 1 posts a file on the single route and another in a batch (Core),
        w.report_files(shard, attempt=1, node="w", files=[{"path": "a", **full}])
        w.report_batch([{"shard_id": shard, "files": {"attempt": 1, "files": [{"path": "b", **full}]}}])
        first = {row["path"]: row for row in user.run_report(run_id)}
        # then attempt 2 reports "a" again in a batch, and attempt 1's late post of "b" comes after it
        d.report_batch([_placed(shard, attempt=2)])
        newer = w.report_batch([{"shard_id": shard, "files": {"attempt": 2, "files": [
            {"path": "a", "bytes": 5, "status": "copied", "checksum": "xxh3:feed"}]}}])
        late = w.report_batch([{"shard_id": shard,
                                "files": {"attempt": 1, "files": [{"path": "b", **full}]}}])
        second = {row["path"]: row for row in user.run_report(run_id)}
    # Then each path's row holds every field as sent, the node being the token's
    for path in ("a", "b"):
        row = first[path]
        assert (row["source"], row["bytes"], row["checksum"], row["status"], row["verified"], row["error"],
                row["tries"], row["started_at"], row["ended_at"], row["node"], row["attempt"]) == (
            "src/a", 8192, "xxh3:0123456789abcdef", "failed", "xxh3", "disk full", 3, 1.7e9, 1.7e9 + 0.25,
            "w", 1), row
    # and the newer attempt replaced "a" (one row), the stale post was refused and changed nothing
    assert newer["results"][0]["ok"] and late["results"][0]["error"] == "stale_attempt"
    assert sorted(second) == ["a", "b"]
    assert (second["a"]["attempt"], second["a"]["bytes"], second["a"]["status"], second["a"]["error"],
            second["a"]["tries"]) == (2, 5, "copied", "", 0)
    assert second["b"] == first["b"]


def test_a_file_result_sent_as_a_row_is_recorded_as_the_same_one_sent_as_an_object(any_cloud: Cloud) -> None:
    """Rows (this node's form) and objects (an earlier node's, during a rolling upgrade) in
    one batch and on the single route: the cloud records the same row for each."""
    cloud = any_cloud
    site, run_id, ids = claimed_run(cloud, activities=1)
    (shard,) = _shard_ids(ids, 1)
    full = {"source": "src/a", "bytes": 8192, "checksum": "xxh3:0123456789abcdef", "status": "failed",
            "verified": "xxh3", "error": "disk full", "tries": 3, "started": 1.7e9, "ended": 1.7e9 + 0.25}
    short = {"status": "copied"}  # every other field left out: the cloud's defaults
    with cloud.node(site.tokens["d"]) as d, cloud.node(site.tokens["w"]) as w, cloud.user() as user:
        d.report_batch([*_plans(ids, 1), _placed(shard)])
        # When one batch carries an earlier node's objects and this node's rows of other paths,
        answer = w.report_batch([
            {"shard_id": shard, "files": {"attempt": 1, "files": [{"path": "o1", **full},
                                                                  {"path": "o2", **short}]}},
            {"shard_id": shard, "files": {"attempt": 1, "rows": [as_row({"path": "r1", **full}),
                                                                 as_row({"path": "r2", **short})]}}])
        # and the single route gets a row of a third path and, in one body, a path twice
        w.request("POST", f"/shards/{shard}/files",
                  json={"attempt": 1, "rows": [as_row({"path": "r3", **full})]})
        w.request("POST", f"/shards/{shard}/files", json={
            "attempt": 1, "files": [{"path": "twice", **full}], "rows": [as_row({"path": "twice", **short})]})
        report = {row["path"]: row for row in user.run_report(run_id)}
    # Then every item was taken and each row equals its object twin, field for field
    assert [r["ok"] for r in answer["results"]] == [True, True], answer
    fields = ("source", "bytes", "checksum", "status", "verified", "error", "tries", "started_at", "ended_at",
              "node", "attempt")
    assert sorted(report) == ["o1", "o2", "r1", "r2", "r3", "twice"]
    assert [report["r1"][k] for k in fields] == [report["o1"][k] for k in fields] == [
        "src/a", 8192, "xxh3:0123456789abcdef", "failed", "xxh3", "disk full", 3, 1.7e9, 1.7e9 + 0.25, "w", 1]
    assert [report["r3"][k] for k in fields] == [report["o1"][k] for k in fields]
    assert [report["r2"][k] for k in fields] == [report["o2"][k] for k in fields] == [
        "", 0, "", "copied", "", "", 0, None, None, "w", 1]
    # and a path sent twice in one body counts as sent last (the rows come after the objects)
    assert [report["twice"][k] for k in fields] == [report["o2"][k] for k in fields]


@pytest.mark.parametrize("bad", [["", "", 0, "", "copied", "", "", 0, None, None],  # no path
                                 ["p", "", 0, "", "moved", "", "", 0, None, None],  # unknown status
                                 ["p", "", -1, "", "copied", "", "", 0, None, None],  # negative size
                                 ["p", "", 0, "x" * 65, "copied", "", "", 0, None, None],  # checksum too long
                                 ["p", "", 0, "", "copied", "", "", 0, None]])  # a field short
def test_a_row_is_checked_as_its_object_is(bad: list[Any]) -> None:
    with pytest.raises(ValidationError, match=r"rows\.0"):
        FileResults.model_validate({"attempt": 1, "rows": [bad]})
