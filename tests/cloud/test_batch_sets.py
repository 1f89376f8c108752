"""A report batch applied as a set (``dmg/cloud/service/batchsets.py``).

A batch costs a fixed number of SQL statements whatever its number of shards (counted
with the cloud's own metrics counters); a batch sent again changes nothing; a batch
mixing a stale-epoch plan with good items, or a worker's early report with good ones,
answers every item as item by item would, and the counters equal the aggregates.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import case, create_engine, func, select

from dmg.cloud.client import CloudClient
from dmg.cloud.models import ActivityRun, FileRecord, Shard, ShardAttempt
from tests.cloud.conftest import Cloud, claimed_run


def _plan(activity_run_id: str, *, epoch: int, shards: int) -> dict[str, Any]:
    return {"plan": {"activity_run_id": activity_run_id, "epoch": epoch,
                     "shards": [{"id": f"{activity_run_id}-{i:05d}", "index": i, "files": 2, "bytes": 10}
                                for i in range(shards)]}}


def _placed(shard_id: str, *, epoch: int) -> dict[str, Any]:
    return {"shard_id": shard_id, "report": {"attempt": 1, "status": "placed", "node": "w", "epoch": epoch}}


def _done(shard_id: str) -> dict[str, Any]:
    """The worker's final report of a shard with its two files' results, in one item."""
    files = [{"path": f"{shard_id}/f{i}", "bytes": 5, "checksum": f"c{i}", "status": "copied"}
             for i in (0, 1)]
    return {"shard_id": shard_id, "files": {"attempt": 1, "files": files},
            "report": {"attempt": 1, "status": "succeeded", "files": 2, "bytes": 10}}


def _statements(user: CloudClient) -> int:
    return int(user.request("GET", "/debug/metrics")["statements"])


def _costs(cloud: Cloud, *, activities: int, shards: int) -> tuple[int, int]:
    """SQL statements of the dispatcher's batch (plans + placements) and of the worker's
    batch (final reports + file results) for ``activities`` x ``shards``."""
    site, run_id, ids = claimed_run(cloud, activities=activities)
    shard_ids = [f"{a}-{i:05d}" for a in ids for i in range(shards)]
    with cloud.node(site.tokens["d"]) as d, cloud.node(site.tokens["w"]) as w, cloud.user() as user:
        before = _statements(user)
        answer = d.report_batch([_plan(a, epoch=1, shards=shards) for a in ids]
                                + [_placed(s, epoch=1) for s in shard_ids])
        middle = _statements(user)
        done = w.report_batch([_done(s) for s in shard_ids])
        after = _statements(user)
        assert all(r["ok"] for r in answer["results"] + done["results"])
        run = user.run(run_id)
        assert run["status"] == "Succeeded" and run["files"] == 2 * len(shard_ids)
    return middle - before, after - middle


def test_a_batch_costs_the_same_statements_for_2_or_40_shards(start_cloud: Any) -> None:
    cloud = start_cloud(cloud_metrics=True)
    # Given claimed activity runs, when their plans, placements and final reports come in batches
    small = _costs(cloud, activities=1, shards=2)
    large = _costs(cloud, activities=4, shards=10)
    # Then a batch of 40 shards costs what a batch of 2 costs (the metrics route's own
    # statements included): a handful of statements, none per shard or per file
    assert large == small, (small, large)
    assert max(large) <= 16, large


def _figures(db_url: str, run_id: str) -> tuple[Any, ...]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            files = connection.execute(select(func.count(), func.max(FileRecord.recorded_at))
                                       .join(ActivityRun, FileRecord.activity_run_id == ActivityRun.id)
                                       .where(ActivityRun.run_id == run_id)).one()
            attempts = connection.execute(select(func.count()).select_from(ShardAttempt)
                                          .join(ActivityRun, ShardAttempt.activity_run_id == ActivityRun.id)
                                          .where(ActivityRun.run_id == run_id)).scalar()
            counted = connection.execute(select(ActivityRun.shards_total, ActivityRun.shards_succeeded,
                                                ActivityRun.files_done, ActivityRun.bytes_done)
                                         .where(ActivityRun.run_id == run_id).order_by(ActivityRun.id)).all()
            aggregates = connection.execute(
                select(func.count(Shard.id), func.coalesce(func.sum(case((Shard.status == "succeeded", 1),
                                                                         else_=0)), 0),
                       func.coalesce(func.sum(Shard.files), 0), func.coalesce(func.sum(Shard.bytes), 0))
                .select_from(ActivityRun).outerjoin(Shard, Shard.activity_run_id == ActivityRun.id)
                .where(ActivityRun.run_id == run_id).group_by(ActivityRun.id).order_by(ActivityRun.id)).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in counted] == [tuple(r) for r in aggregates]  # counters == aggregates
    return tuple(files), attempts, [tuple(r) for r in counted]


def test_a_batch_sent_again_changes_nothing(cloud: Cloud) -> None:
    # Given a run whose plans, placements and final reports were applied
    site, run_id, ids = claimed_run(cloud, activities=2)
    shard_ids = [f"{a}-{i:05d}" for a in ids for i in range(3)]
    plans = [_plan(a, epoch=1, shards=3) for a in ids] + [_placed(s, epoch=1) for s in shard_ids]
    finals = [_done(s) for s in shard_ids]
    with cloud.node(site.tokens["d"]) as d, cloud.node(site.tokens["w"]) as w, cloud.user() as user:
        d.report_batch(plans)
        w.report_batch(finals)
        before = user.run(run_id)
        figures = _figures(cloud.db_url, run_id)

        # When both batches come again (their answers were lost)
        again = d.report_batch(plans)["results"] + w.report_batch(finals)["results"]

        # Then every item is taken and nothing changed: no file row, attempt or count twice
        assert all(r["ok"] for r in again)
        after = user.run(run_id)
    assert after["status"] == before["status"] == "Succeeded"
    assert after["files"] == before["files"] == 12
    assert _figures(cloud.db_url, run_id)[1:] == figures[1:]
    assert _figures(cloud.db_url, run_id)[0][0] == figures[0][0] == 12


@pytest.mark.parametrize("stale_first", [True, False])
def test_a_stale_plan_in_a_batch_is_refused_alone(cloud: Cloud, stale_first: bool) -> None:
    # Given two activity runs claimed at epoch 1, one then claimed again by a newer dispatcher
    # epoch (the old dispatcher never planned it)
    site, run_id, [first, second] = claimed_run(cloud, activities=2)
    with cloud.node(site.tokens["d"]) as d, cloud.node(site.tokens["w"]) as w, cloud.user() as user:
        d.report_batch([_plan(first, epoch=1, shards=2)])  # planned: stays with epoch 1
        retaken = d.claim_activity_runs(epoch=2, wait=0, limit=2)
        assert [a["id"] for a in retaken] == [second]

        # When a batch of the old epoch carries the plan of the taken-back one among good
        # items (a placement of the planned one, the worker's items in their own batch)
        stale = _plan(second, epoch=1, shards=2)
        good = [_placed(f"{first}-00000", epoch=2)]
        answer = d.report_batch([stale, *good] if stale_first else [*good, stale])["results"]

        # Then only the stale plan is refused; the good item is applied
        by_kind = {("plan" if r["shard_id"] == "" else "placed"): r for r in answer}
        assert by_kind["plan"]["ok"] is False and by_kind["plan"]["error"] == "stale_attempt"
        assert by_kind["placed"]["ok"] is True
        done = w.report_batch([_done(f"{first}-00000")])["results"]
        assert done[0]["ok"] is True
        shards = {s["id"]: s["status"] for a in user.run(run_id)["activity_runs"] for s in a["shards"]}
    assert shards == {f"{first}-00000": "succeeded", f"{first}-00001": "planned"}
    _figures(cloud.db_url, run_id)


def test_a_workers_early_report_waits_alone_in_a_batch_applied_as_a_set(cloud: Cloud) -> None:
    # Given a planned activity run with one shard placed on w and one not placed yet
    site, run_id, [activity] = claimed_run(cloud, activities=1)
    s0, s1 = f"{activity}-00000", f"{activity}-00001"
    with cloud.node(site.tokens["d"]) as d, cloud.node(site.tokens["w"]) as w, cloud.user() as user:
        d.report_batch([_plan(activity, epoch=1, shards=2), _placed(s0, epoch=1)])

        # When w's batch reports both shards done, then s0 "running" again (a late report)
        answer = w.report_batch([_done(s1), _done(s0), {"shard_id": s1, "report": {
            "attempt": 1, "status": "running"}}])

        # Then s1's items wait (retry, nothing of them stored), s0's is applied
        assert [(r["ok"], r.get("retry", False)) for r in answer["results"]] == [
            (False, True), (True, False), (False, True)]
        assert answer["retry"]["error"] == "retryable"
        activity_run = user.run(run_id)["activity_runs"][0]
        assert activity_run["files"] == 2 and activity_run["status"] == "InProgress"
        files, _attempts, _counted = _figures(cloud.db_url, run_id)
        assert files[0] == 2  # s0's two files only

        # And once s1 is placed, the same items are taken
        d.report_batch([_placed(s1, epoch=1)])
        assert all(r["ok"] for r in w.report_batch([_done(s1)])["results"])
        assert user.run(run_id)["status"] == "Succeeded"
