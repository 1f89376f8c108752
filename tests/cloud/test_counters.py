"""Run and activity-run counters (dmg.cloud.service.counters) equal the aggregates.

Given a run of four activities driven through the real API — shards that fail, a
failed shard retried on another node, reports sent one by one and in a batch,
progress reports, an activity the dispatcher fails, and a user's cancel — the
counters the cloud kept report by report equal what aggregate queries over the
shards and activity runs give, and the statuses shown follow from them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from dmg.cloud.client import CloudClient
from dmg.cloud.db import Database
from dmg.cloud.models import ActivityRun, Run, Shard
from tests.cloud.conftest import Cloud, drop_dispatcher, make_pipeline, make_site, place

STATUSES = ("Queued", "InProgress", "Succeeded", "Failed", "Cancelled")


def _plan(node: CloudClient, activity_id: str, count: int) -> list[str]:
    ids = [f"{activity_id}-s{i}" for i in range(count)]
    node.plan_shards(activity_id, epoch=1, shards=[{"id": shard, "index": i, "files": 2, "bytes": 100}
                                                   for i, shard in enumerate(ids)])
    return ids


def counters_and_aggregates(db_url: str, run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what the counters say, what aggregate queries say) for the run and each activity run."""
    db = Database(db_url)
    try:
        with db.read() as session:
            run = session.get(Run, run_id)
            assert run is not None
            kept: dict[str, Any] = {"run": {
                "total": run.activities_total, "Queued": run.activities_queued,
                "InProgress": run.activities_in_progress, "Succeeded": run.activities_succeeded,
                "Failed": run.activities_failed, "Cancelled": run.activities_cancelled,
                "files": run.files_done, "bytes": run.bytes_done}}
            by_status = dict(session.execute(select(ActivityRun.status, func.count())
                                             .where(ActivityRun.run_id == run_id)
                                             .group_by(ActivityRun.status)).all())
            files, size = session.execute(
                select(func.coalesce(func.sum(Shard.files), 0), func.coalesce(func.sum(Shard.bytes), 0))
                .join(ActivityRun).where(ActivityRun.run_id == run_id)).one()
            derived: dict[str, Any] = {"run": {
                "total": sum(by_status.values()), "files": files, "bytes": size,
                **{s: by_status.get(s, 0) for s in STATUSES}}}
            for activity in session.scalars(select(ActivityRun).where(ActivityRun.run_id == run_id)):
                kept[activity.name] = {
                    "total": activity.shards_total, "succeeded": activity.shards_succeeded,
                    "failed": activity.shards_failed, "first_failed": activity.first_failed_index,
                    "files": activity.files_done, "bytes": activity.bytes_done}
                shard = Shard.activity_run_id == activity.id
                total, succeeded, failed, first, files, size = session.execute(select(
                    func.count(), func.count().filter(Shard.status == "succeeded"),
                    func.count().filter(Shard.status == "failed"),
                    func.min(Shard.index).filter(Shard.status == "failed"),
                    func.coalesce(func.sum(Shard.files), 0), func.coalesce(func.sum(Shard.bytes), 0))
                    .where(shard)).one()
                derived[activity.name] = {"total": total, "succeeded": succeeded, "failed": failed,
                                          "first_failed": first, "files": files, "bytes": size}
    finally:
        db.dispose()
    return kept, derived


def test_counters_equal_the_aggregates_after_failures_retries_and_a_cancel(cloud: Cloud,
                                                                           user: CloudClient) -> None:
    site = make_site(user, nodes=("n1", "n2"))
    run = user.run_pipeline(make_pipeline(user, site.gateway, activities=4))
    with cloud.node(site.tokens["n1"]) as n1, cloud.node(site.tokens["n2"]) as n2:
        claimed = {a["name"]: a["id"] for a in n1.claim_activity_runs(epoch=1, wait=0)}
        assert sorted(claimed) == ["copy0", "copy1", "copy2", "copy3"]
        # copy0: shard 0 fails on n1 and is retried on n2 (succeeds); shard 2 fails for good.
        s0, s1, s2 = _plan(n1, claimed["copy0"], 3)
        for shard in (s0, s1, s2):
            place(n1, shard, "n1")
        n1.report_shard(s0, {"attempt": 1, "status": "running", "files": 1, "bytes": 40})
        n1.report_shard(s0, {"attempt": 1, "status": "failed", "error": "read error", "files": 1,
                             "bytes": 40})
        assert user.run(run["id"])["activity_runs"][0]["status"] == "Failed"
        place(n1, s0, "n2", attempt=2, previous_ended="worker died")
        answer = n2.report_batch([
            {"shard_id": s0, "report": {"attempt": 2, "status": "running", "files": 1, "bytes": 50}},
            {"shard_id": s0, "report": {"attempt": 2, "status": "succeeded", "files": 2, "bytes": 100}}])
        assert answer["applied"] == 2, answer
        n1.report_shard(s1, {"attempt": 1, "status": "succeeded", "files": 2, "bytes": 100})
        assert user.run(run["id"])["activity_runs"][0]["status"] == "InProgress"  # the failure was retried
        n1.report_shard(s2, {"attempt": 1, "status": "failed", "error": "disk full", "files": 1, "bytes": 7})
        # copy1: two shards succeed, one with a late progress report (ignored).
        t0, t1 = _plan(n1, claimed["copy1"], 2)
        place(n1, t0, "n1")
        place(n1, t1, "n2")
        n1.report_shard(t0, {"attempt": 1, "status": "succeeded", "files": 2, "bytes": 100})
        n2.report_shard(t1, {"attempt": 1, "status": "succeeded", "files": 2, "bytes": 100})
        n2.report_shard(t1, {"attempt": 1, "status": "running", "files": 1, "bytes": 1})
        # copy2: one shard still running when the user cancels the run.
        (u0,) = _plan(n1, claimed["copy2"], 1)
        place(n1, u0, "n2")
        n2.report_shard(u0, {"attempt": 1, "status": "running", "files": 1, "bytes": 30})
        # copy3: the dispatcher fails it before it has a plan.
        n1.fail_activity_run(claimed["copy3"], epoch=1, error="cannot list the source")
        kept, derived = counters_and_aggregates(cloud.db_url, run["id"])
        assert kept == derived
        assert kept["run"]["Failed"] == 2 and kept["run"]["Succeeded"] == 1 and kept["run"]["InProgress"] == 1
        user.cancel_run(run["id"])
        n2.report_shard(u0, {"attempt": 1, "status": "failed", "error": "cancelled by a user",
                             "files": 1, "bytes": 30})
    kept, derived = counters_and_aggregates(cloud.db_url, run["id"])
    assert kept == derived
    assert kept["copy0"] == {"total": 3, "succeeded": 2, "failed": 1, "first_failed": 2, "files": 5,
                             "bytes": 207}
    assert kept["run"]["Cancelled"] == 1 and kept["run"]["files"] == 2 + 2 + 1 + 2 + 2 + 1
    shown = user.run(run["id"])
    statuses = {a["name"]: a["status"] for a in shown["activity_runs"]}
    assert statuses == {"copy0": "Failed", "copy1": "Succeeded", "copy2": "Cancelled", "copy3": "Failed"}
    assert shown["status"] == "Cancelled" and shown["ended_at"] is not None
    assert "shard 2 failed on n1: disk full" in shown["activity_runs"][0]["error"]


def test_claims_in_parts_and_a_take_back_keep_the_counters_and_the_run_s_first_start(
        cloud: Cloud, user: CloudClient) -> None:
    """The claim moves its runs' counters in one UPDATE each (``counters.runs_claimed``): runs
    claimed a part at a time, some taken back by a newer dispatcher in the same claim that
    takes a queued one, keep their counters equal to the aggregates after every claim, show
    InProgress, and keep the first claim's time as their start."""
    site = make_site(user, nodes=("old", "new"))
    one = user.run_pipeline(make_pipeline(user, site.gateway, activities=3))["id"]
    assert counters_and_aggregates(cloud.db_url, one)[0]["run"]["Queued"] == 3

    def counted(run_id: str) -> tuple[int, int]:
        kept, derived = counters_and_aggregates(cloud.db_url, run_id)
        assert kept == derived
        return kept["run"]["Queued"], kept["run"]["InProgress"]

    with cloud.node(site.tokens["old"]) as old, cloud.node(site.tokens["new"]) as new:
        [first] = old.claim_activity_runs(epoch=3, wait=0, limit=1)
        assert counted(one) == (2, 1)
        shown = user.run(one)
        started = shown["started_at"]
        assert shown["status"] == "InProgress" and started is not None and shown["ended_at"] is None
        assert started == next(a["started_at"] for a in shown["activity_runs"] if a["id"] == first["id"])
        drop_dispatcher(cloud, site.tokens["old"], epoch=3, gateway=site.gateway)  # its poll claims 2
        assert counted(one) == (0, 3)
        two = user.run_pipeline(make_pipeline(user, site.gateway, activities=2))["id"]
        taken = new.claim_activity_runs(epoch=5, wait=0, limit=4)  # 3 taken back + 1 queued
        assert len(taken) == 4 and [a["run_id"] for a in taken] == [one] * 3 + [two]
        assert counted(one) == (0, 3) and counted(two) == (1, 1)
        [last] = new.claim_activity_runs(epoch=5, wait=0)
        assert last["run_id"] == two and counted(two) == (0, 2)
        assert new.claim_activity_runs(epoch=5, wait=0) == []
    for run_id in (one, two):
        assert user.run(run_id)["status"] == "InProgress"
    assert user.run(one)["started_at"] == started
