"""Plans in the dispatcher's report batches (POST /nodes/reports, ``{plan: {...}}`` items).

A plan and its shards' placements travel in one ordered batch and are applied in
order, in one transaction; a plan sent again (a replay, a new dispatcher) is a no-op;
a plan from a stale epoch is refused alone while the batch's other items apply; a
worker's report that arrives before its shard's plan is answered "retry", never
"not found".
"""

from __future__ import annotations

from typing import Any

from dmg.cloud.client import CloudClient
from tests.cloud.conftest import Cloud, claimed_run, make_pipeline, make_site


def _plan(activity_run_id: str, *, epoch: int, shards: int = 2) -> dict[str, Any]:
    return {"plan": {"activity_run_id": activity_run_id, "epoch": epoch,
                     "shards": [{"id": f"{activity_run_id}-{i:05d}", "index": i, "files": 1, "bytes": 5}
                                for i in range(shards)]}}


def _placed(shard_id: str, node: str, *, epoch: int) -> dict[str, Any]:
    return {"shard_id": shard_id, "report": {"attempt": 1, "status": "placed", "node": node, "epoch": epoch}}


def _shards(user: CloudClient, run_id: str) -> list[tuple[str, str, str]]:
    return [(s["id"], s["status"], s["node"]) for a in user.run(run_id)["activity_runs"]
            for s in a["shards"]]


def test_a_plan_and_its_placements_in_one_batch_apply_in_order(cloud: Cloud) -> None:
    # Given a claimed activity run whose worker already ran a shard before the cloud heard the plan
    site, run_id, [activity] = claimed_run(cloud)
    s0, s1 = f"{activity}-00000", f"{activity}-00001"
    with cloud.node(site.tokens["d"]) as d, cloud.node(site.tokens["w"]) as w, cloud.user() as user:
        early = w.report_batch([{"shard_id": s0, "report": {"attempt": 1, "status": "succeeded"}}])
        assert early["results"][0]["retry"] is True and early["results"][0]["error"] == "retryable"

        # When the dispatcher's batch carries the plan, then both placements
        answer = d.report_batch([_plan(activity, epoch=1), _placed(s0, "w", epoch=1),
                                 _placed(s1, "w", epoch=1)])

        # Then all three apply, in order, and the worker's held report is taken next
        assert [r["ok"] for r in answer["results"]] == [True, True, True] and answer["retry"] is None
        assert answer["results"][0]["activity_run_id"] == activity
        assert _shards(user, run_id) == [(s0, "placed", "w"), (s1, "placed", "w")]
        done = {"attempt": 1, "status": "succeeded", "files": 1, "bytes": 5}
        assert all(r["ok"] for r in w.report_batch([{"shard_id": s, "report": done} for s in (s0, s1)])
                   ["results"])
        assert user.run(run_id)["status"] == "Succeeded"


def test_a_plan_sent_again_is_a_no_op(cloud: Cloud) -> None:
    # Given a planned activity run one of whose shards already succeeded
    site, run_id, [activity] = claimed_run(cloud)
    s0, s1 = f"{activity}-00000", f"{activity}-00001"
    with cloud.node(site.tokens["d"]) as d, cloud.node(site.tokens["w"]) as w, cloud.user() as user:
        d.report_batch([_plan(activity, epoch=1), _placed(s0, "w", epoch=1)])
        w.report_batch([{"shard_id": s0, "report": {"attempt": 1, "status": "succeeded", "files": 1}}])
        before = _shards(user, run_id)

        # When the same plan comes again (a lost answer; a dispatcher replaying it), alone and
        # in a batch with the placement that follows it
        again = d.report_batch([_plan(activity, epoch=1)])
        replay = d.report_batch([_plan(activity, epoch=1), _placed(s1, "w", epoch=1)])

        # Then it is taken and changes nothing: the finished shard stays finished
        assert again["results"][0]["ok"] is True and all(r["ok"] for r in replay["results"])
        assert before == [(s0, "succeeded", "w"), (s1, "planned", "")]
        assert _shards(user, run_id) == [(s0, "succeeded", "w"), (s1, "placed", "w")]
        assert user.run(run_id)["status"] == "InProgress"


def test_a_plan_of_a_stale_epoch_is_refused_alone(cloud: Cloud) -> None:
    # Given activity run A claimed at site epoch 1, and the dispatcher's node now at epoch 2
    # (it won the site lease again) with activity run B claimed there
    with cloud.user() as user:
        site = make_site(user, nodes=("d", "w"))
        run = user.run_pipeline(make_pipeline(user, site.gateway, activities=2))
    with cloud.node(site.tokens["d"]) as d, cloud.user() as user:
        [a] = [x["id"] for x in d.claim_activity_runs(epoch=1, wait=0, limit=1)]
        fresh = [x["id"] for x in d.claim_activity_runs(epoch=2, wait=0, limit=2)]
        [b] = [x for x in fresh if x != a]

        # When one batch carries A's plan from epoch 1, B's plan and B's placements from epoch 2
        answer = d.report_batch([_plan(a, epoch=1), _plan(b, epoch=2), _placed(f"{b}-00000", "w", epoch=2),
                                 _placed(f"{b}-00001", "w", epoch=2)])

        # Then A's plan alone is refused (left for the current dispatcher); the rest applies
        first, *rest = answer["results"]
        assert first["ok"] is False and first["error"] == "stale_attempt" and first["not_dispatcher"] is True
        assert [r["ok"] for r in rest] == [True, True, True]
        shards = _shards(user, run["id"])
        assert [s for s in shards if s[0].startswith(a)] == []
        assert [s for s in shards if s[0].startswith(b)] == [(f"{b}-00000", "placed", "w"),
                                                              (f"{b}-00001", "placed", "w")]
        # And the plan sent under the current epoch is taken
        assert d.report_batch([_plan(a, epoch=2)])["results"][0]["ok"] is True


def test_a_placement_before_its_plan_waits_and_a_report_of_an_unknown_run_is_not_found(
        cloud: Cloud) -> None:
    site, _run_id, [activity] = claimed_run(cloud)
    with cloud.node(site.tokens["d"]) as d:
        answer = d.report_batch([_placed(f"{activity}-00000", "w", epoch=1),
                                 _placed("nosuchrun-00000", "w", epoch=1)])
    assert [r.get("retry") for r in answer["results"]] == [True, None]
    assert answer["results"][1]["error"] == "not_found"


def test_a_plan_the_cloud_cannot_take_yet_waits_with_its_placements(cloud: Cloud) -> None:
    # Given d, the gateway's dispatcher at the cloud (its lease runs), and w, which won the
    # site lease after it (a newer site epoch) while d's cloud lease has not ended
    site, run_id, [activity] = claimed_run(cloud)
    with cloud.node(site.tokens["w"]) as w, cloud.user() as user:
        # When w's batch carries the plan and a placement of its shard
        answer = w.report_batch([_plan(activity, epoch=2), _placed(f"{activity}-00000", "w", epoch=2)])

        # Then both wait ("retry": sent again later), and nothing was recorded
        assert [(r["ok"], r.get("retry")) for r in answer["results"]] == [(False, True), (False, True)]
        assert answer["retry"]["error"] == "retryable"
        assert _shards(user, run_id) == []
