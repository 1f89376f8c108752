"""Runs, claims, epochs, shards, and the statuses derived from them."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from dmg.cloud.client import CloudClient
from dmg.errors import BadInput, Conflict, NotFound, Retryable, StaleAttempt, Unauthorized
from tests.cloud.conftest import Cloud, drop_dispatcher, make_pipeline, make_site, place, unique


def _activity(user: CloudClient, run_id: str, index: int = 0) -> dict[str, Any]:
    return user.run(run_id)["activity_runs"][index]


def test_a_run_queues_its_activity_runs(user: CloudClient) -> None:
    site = make_site(user)
    pipeline = make_pipeline(user, site.gateway, activities=2)
    run = user.run_pipeline(pipeline)
    assert run["status"] == "Queued" and run["pipeline"] == pipeline and run["gateway"] == site.gateway
    assert [a["status"] for a in run["activity_runs"]] == ["Queued", "Queued"]
    assert user.run(run["id"])["id"] == run["id"]
    assert run["id"] in [r["id"] for r in user.list_runs(limit=10)]


def test_a_new_run_s_answer_is_the_run_as_the_cloud_shows_it(user: CloudClient) -> None:
    # (the answer is built from the rows the run's creation inserts, not read back)
    site = make_site(user)
    run = user.run_pipeline(make_pipeline(user, site.gateway, activities=3))
    run.pop("warnings")
    assert run == user.run(run["id"])
    assert [a["shards"] for a in run["activity_runs"]] == [[], [], []]


def test_claim_returns_full_store_definitions(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user)
    pipeline = make_pipeline(user, site.gateway)
    run = user.run_pipeline(pipeline)
    with cloud.node(site.tokens["n1"]) as node:
        claimed = node.claim_activity_runs(epoch=1, wait=0)
        assert node.claim_activity_runs(epoch=1, wait=0) == []
    assert len(claimed) == 1
    activity = claimed[0]
    assert activity["id"] == run["activity_runs"][0]["id"] and activity["run_id"] == run["id"]
    assert activity["name"] == "copy0" and activity["options"] == {"overwrite": True}
    assert activity["source"]["path"] == "dir0" and activity["sink"]["path"] == "out0"
    assert activity["source"]["store"]["type"] == "file"
    assert activity["source"]["store"]["location"] == "/data/in"
    assert activity["sink"]["store"]["options"] == {"region": "us-east-1"}
    shown = user.run(run["id"])
    assert shown["status"] == "InProgress" and shown["started_at"] is not None
    assert shown["activity_runs"][0]["claimed_by"] == "n1"


def test_a_gateway_claims_only_its_own_runs(cloud: Cloud, user: CloudClient) -> None:
    mine, other = make_site(user), make_site(user)
    user.run_pipeline(make_pipeline(user, other.gateway))
    with cloud.node(mine.tokens["n1"]) as node:
        assert node.claim_activity_runs(epoch=1, wait=0) == []


def test_two_concurrent_claimers_never_share_an_activity_run(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user, nodes=("a", "b"))
    pipeline = make_pipeline(user, site.gateway, activities=10)
    expected = set()
    for _ in range(4):
        expected |= {a["id"] for a in user.run_pipeline(pipeline)["activity_runs"]}
    got: dict[str, list[str]] = {"a": [], "b": []}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def claimer(name: str) -> None:
        try:
            with cloud.node(site.tokens["a"]) as node:  # two claimer threads of the dispatcher
                start.wait()
                while True:
                    batch = node.claim_activity_runs(epoch=7, wait=0, limit=3)
                    if not batch:
                        return
                    got[name] += [a["id"] for a in batch]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in got]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert not set(got["a"]) & set(got["b"])
    assert len(got["a"]) + len(got["b"]) == len(expected) == 40
    assert set(got["a"]) | set(got["b"]) == expected


def test_a_waiting_claim_is_woken_by_a_new_run(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user)
    pipeline = make_pipeline(user, site.gateway)
    result: list[Any] = []
    with cloud.node(site.tokens["n1"]) as node:
        waiter = threading.Thread(target=lambda: result.append(node.claim_activity_runs(epoch=1, wait=30)))
        waiter.start()
        run = user.run_pipeline(pipeline)
        waiter.join(timeout=60)
    assert [a["id"] for a in result[0]] == [run["activity_runs"][0]["id"]]


def test_older_epochs_are_fenced(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user, nodes=("old", "new"))
    pipeline = make_pipeline(user, site.gateway)
    run = user.run_pipeline(pipeline)
    with cloud.node(site.tokens["old"]) as old, cloud.node(site.tokens["new"]) as new:
        [claimed] = old.claim_activity_runs(epoch=3, wait=0)
        assert new.claim_activity_runs(epoch=5, wait=0) == []  # old's cloud lease runs: new waits
        drop_dispatcher(cloud, site.tokens["old"], epoch=3, gateway=site.gateway)
        # The new dispatcher takes back what the old one claimed and never planned.
        [taken_back] = new.claim_activity_runs(epoch=5, wait=0)
        assert taken_back["id"] == claimed["id"]
        assert user.gateway(site.gateway)["dispatcher"] == "new"
        assert old.claim_activity_runs(epoch=4, wait=0) == []  # new's lease runs: old only waits
        with pytest.raises(StaleAttempt) as stale:
            old.plan_shards(claimed["id"], epoch=3, shards=[])
        assert "epoch 3" in stale.value.message
        with pytest.raises(StaleAttempt):
            old.fail_activity_run(claimed["id"], epoch=3, error="lost")
        new.plan_shards(claimed["id"], epoch=5, shards=[])
    assert user.run(run["id"])["status"] == "Succeeded"


def test_one_claim_takes_back_and_takes_queued_runs_oldest_first(cloud: Cloud, user: CloudClient) -> None:
    """A new dispatcher's one claim returns both what an older epoch claimed and never planned
    and what is still queued, oldest first, each counted once as InProgress in its run."""
    site = make_site(user, nodes=("old", "new"))
    first = user.run_pipeline(make_pipeline(user, site.gateway))
    with cloud.node(site.tokens["old"]) as old, cloud.node(site.tokens["new"]) as new:
        [claimed] = old.claim_activity_runs(epoch=3, wait=0)
        drop_dispatcher(cloud, site.tokens["old"], epoch=3, gateway=site.gateway)
        second = user.run_pipeline(make_pipeline(user, site.gateway, activities=2))
        taken = new.claim_activity_runs(epoch=5, wait=0)
        assert [a["id"] for a in taken] == [claimed["id"]] + [a["id"] for a in second["activity_runs"]]
        assert new.claim_activity_runs(epoch=5, wait=0) == []  # nothing is taken twice
    for run, count in ((first, 1), (second, 2)):
        shown = user.run(run["id"])
        assert shown["status"] == "InProgress"
        assert [a["status"] for a in shown["activity_runs"]] == ["InProgress"] * count


def test_a_claim_whose_answer_was_lost_is_sent_again_when_the_dispatcher_asks(
        cloud: Cloud, user: CloudClient) -> None:
    """A dispatcher whose claim failed says which claimed runs it holds (``again``): the
    others its epoch claimed and never planned come again, first, and are counted once."""
    site = make_site(user)
    first = user.run_pipeline(make_pipeline(user, site.gateway, activities=3))
    with cloud.node(site.tokens["n1"]) as node:
        held, lost, also_lost = node.claim_activity_runs(epoch=3, wait=0)  # the answer never arrives
        assert node.claim_activity_runs(epoch=3, wait=0) == []  # a plain claim sends nothing again
        second = user.run_pipeline(make_pipeline(user, site.gateway))
        [again] = node.claim_activity_runs(epoch=3, wait=0, limit=1, again=[held["id"]])
        assert again == dict(lost, again=True)  # (its plan may be recorded at the site)
        taken = node.claim_activity_runs(epoch=3, wait=0, again=[held["id"], lost["id"]])
        assert [a["id"] for a in taken] == [also_lost["id"], second["activity_runs"][0]["id"]]
        assert [a.get("again") for a in taken] == [True, None]
        for activity in (held, lost, also_lost, taken[1]):
            node.plan_shards(activity["id"], epoch=3, shards=[])
        assert node.claim_activity_runs(epoch=3, wait=0, again=[]) == []  # planned: never again
    for run in (first, second):
        assert user.run(run["id"])["status"] == "Succeeded"


def test_runs_sent_again_are_only_the_asking_dispatcher_s(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user, nodes=("old", "new"))
    user.run_pipeline(make_pipeline(user, site.gateway))
    with cloud.node(site.tokens["old"]) as old, cloud.node(site.tokens["new"]) as new:
        [claimed] = old.claim_activity_runs(epoch=3, wait=0)
        assert new.claim_activity_runs(epoch=5, wait=0, again=[]) == []  # old's lease runs
        drop_dispatcher(cloud, site.tokens["old"], epoch=3, gateway=site.gateway)
        [taken_back] = new.claim_activity_runs(epoch=5, wait=0)  # a newer epoch takes it back
        assert taken_back["id"] == claimed["id"]
        assert old.claim_activity_runs(epoch=4, wait=0, again=[]) == []  # not old's any more
        assert new.claim_activity_runs(epoch=5, wait=0, again=[claimed["id"]]) == []


def test_no_shards_succeeds_at_once(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user)
    run = user.run_pipeline(make_pipeline(user, site.gateway))
    with cloud.node(site.tokens["n1"]) as node:
        [activity] = node.claim_activity_runs(epoch=1, wait=0)
        node.plan_shards(activity["id"], epoch=1, shards=[])
    shown = user.run(run["id"])
    assert shown["status"] == "Succeeded" and shown["ended_at"] is not None
    assert shown["activity_runs"][0]["status"] == "Succeeded"


def _plan_two(node: CloudClient, activity_id: str) -> list[str]:
    shards: list[dict[str, Any]] = [{"id": f"{activity_id}-{i}", "index": i, "files": 2, "bytes": 100}
                                    for i in range(2)]
    node.plan_shards(activity_id, epoch=1, shards=shards)
    node.plan_shards(activity_id, epoch=1, shards=shards)  # idempotent
    return [s["id"] for s in shards]


def test_shards_drive_activity_and_run_status(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user, nodes=("n1", "n2"))
    run = user.run_pipeline(make_pipeline(user, site.gateway))
    with cloud.node(site.tokens["n1"]) as n1, cloud.node(site.tokens["n2"]) as n2:
        [activity] = n1.claim_activity_runs(epoch=1, wait=0)
        first, second = _plan_two(n1, activity["id"])
        planned = _activity(user, run["id"])
        assert planned["status"] == "InProgress" and len(planned["shards"]) == 2
        assert planned["shards"][0]["status"] == "planned" and planned["bytes_total"] == 200
        n1.report_shard(first, {"attempt": 1, "node": "n1", "status": "placed",
                                "wait_reason": "all nodes busy"})
        n1.report_shard(first, {"attempt": 1, "node": "n1", "status": "running", "files": 1, "bytes": 50})
        place(n1, second, "n2")
        n2.report_shard(second, {"attempt": 1, "node": "n2", "status": "succeeded", "files": 2,
                                 "bytes": 100, "started_at": 1000.0, "ended_at": 1002.0})
        assert user.run(run["id"])["status"] == "InProgress"
        n1.report_shard(first, {"attempt": 1, "node": "n1", "status": "succeeded", "files": 2, "bytes": 100})
        n1.report_shard(first, {"attempt": 1, "node": "n1", "status": "running"})  # late: ignored
    shown = user.run(run["id"])
    assert shown["status"] == "Succeeded" and shown["files"] == 4 and shown["bytes"] == 200
    activity_run = shown["activity_runs"][0]
    assert activity_run["status"] == "Succeeded" and activity_run["nodes"] == ["n1", "n2"]
    by_index = {s["index"]: s for s in activity_run["shards"]}
    assert by_index[0]["node"] == "n1" and by_index[0]["attempt"] == 1
    assert by_index[0]["status"] == "succeeded" and by_index[0]["wait_reason"] == "all nodes busy"
    assert by_index[0]["queued_at"] is not None and by_index[0]["ended_at"] is not None
    assert by_index[1]["node"] == "n2" and by_index[1]["started_at"] == 1000.0


def test_a_failed_shard_fails_the_activity_run(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user)
    run = user.run_pipeline(make_pipeline(user, site.gateway))
    with cloud.node(site.tokens["n1"]) as node:
        [activity] = node.claim_activity_runs(epoch=1, wait=0)
        first, second = _plan_two(node, activity["id"])
        place(node, first, "n1")
        place(node, second, "n1")
        node.report_shard(first, {"attempt": 1, "status": "succeeded"})
        node.report_shard(second, {"attempt": 1, "status": "failed", "error": "disk full"})
    shown = user.run(run["id"])
    assert shown["status"] == "Failed"
    assert shown["activity_runs"][0]["status"] == "Failed"
    assert "disk full" in shown["activity_runs"][0]["error"]
    assert shown["activity_runs"][0]["shards"][1]["node"] == "n1"


def test_attempts_fence_older_reports(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user, nodes=("n1", "n2"))
    run = user.run_pipeline(make_pipeline(user, site.gateway))
    with cloud.node(site.tokens["n1"]) as n1, cloud.node(site.tokens["n2"]) as n2:
        [activity] = n1.claim_activity_runs(epoch=1, wait=0)
        first, _second = _plan_two(n1, activity["id"])
        place(n1, first, "n1")
        n1.report_shard(first, {"attempt": 1, "node": "n1", "status": "running", "bytes": 10})
        place(n1, first, "n2", attempt=2, previous_ended="node offline")
        n2.report_shard(first, {"attempt": 2, "node": "n2", "status": "running"})
        with pytest.raises(StaleAttempt) as stale:
            n1.report_shard(first, {"attempt": 1, "node": "n1", "status": "succeeded"})
        assert "attempt 2" in stale.value.message
    shard = _activity(user, run["id"])["shards"][0]
    assert shard["node"] == "n2" and shard["attempt"] == 2 and shard["status"] == "running"
    assert shard["bytes"] == 0


def test_the_dispatcher_can_fail_an_activity_run(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user)
    run = user.run_pipeline(make_pipeline(user, site.gateway, activities=2))
    with cloud.node(site.tokens["n1"]) as node:
        first, second = node.claim_activity_runs(epoch=1, wait=0)
        node.fail_activity_run(first["id"], epoch=1, error="source listing failed: no such directory")
        node.fail_activity_run(first["id"], epoch=1, error="again")  # idempotent
        assert user.run(run["id"])["status"] == "InProgress"
        with pytest.raises(Conflict):
            node.plan_shards(first["id"], epoch=1, shards=[])
        node.plan_shards(second["id"], epoch=1, shards=[])
    shown = user.run(run["id"])
    assert shown["status"] == "Failed"
    assert [a["status"] for a in shown["activity_runs"]] == ["Failed", "Succeeded"]
    assert shown["activity_runs"][0]["error"] == "source listing failed: no such directory"


def test_plan_and_report_errors(cloud: Cloud, user: CloudClient) -> None:
    site, other = make_site(user), make_site(user)
    run = user.run_pipeline(make_pipeline(user, site.gateway))
    activity_id = run["activity_runs"][0]["id"]
    with cloud.node(site.tokens["n1"]) as node, cloud.node(other.tokens["n1"]) as stranger:
        with pytest.raises(Conflict):
            node.plan_shards(activity_id, epoch=1, shards=[])  # not claimed yet
        node.claim_activity_runs(epoch=1, wait=0)
        with pytest.raises(NotFound):
            stranger.plan_shards(activity_id, epoch=1, shards=[])
        with pytest.raises(BadInput):
            node.plan_shards(activity_id, epoch=1, shards=[{"id": "x", "index": 0}, {"id": "x", "index": 1}])
        shard_id = unique("shard")
        node.plan_shards(activity_id, epoch=1, shards=[{"id": shard_id, "index": 0}])
        with pytest.raises(NotFound):
            stranger.report_shard(shard_id, {"attempt": 1, "status": "running"})
        with pytest.raises(NotFound):
            node.report_shard(unique("nope"), {"attempt": 1, "status": "running"})
        run2 = user.run_pipeline(make_pipeline(user, site.gateway))
        [claimed] = node.claim_activity_runs(epoch=1, wait=0)
        assert claimed["run_id"] == run2["id"]
        with pytest.raises(Conflict):
            node.plan_shards(claimed["id"], epoch=1, shards=[{"id": shard_id, "index": 0}])


def test_a_node_removed_during_its_long_poll_is_refused(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user)
    outcome: list[BaseException] = []
    started = threading.Event()

    def wait_for_work() -> None:
        with cloud.node(site.tokens["n1"]) as node:
            node.claim_activity_runs(epoch=1, wait=0)  # authenticated and known
            started.set()
            try:
                node.claim_activity_runs(epoch=1, wait=30)
            except BaseException as exc:
                outcome.append(exc)

    waiter = threading.Thread(target=wait_for_work)
    waiter.start()
    assert started.wait(timeout=30)
    user.remove_node(site.gateway, "n1")
    waiter.join(timeout=60)
    assert len(outcome) == 1 and isinstance(outcome[0], Unauthorized)


def test_a_late_placement_report_never_moves_a_running_shard_back(cloud: Cloud, user: CloudClient) -> None:
    # The dispatcher reports "placed" off its hot path: the worker's "running" may come first.
    site = make_site(user)
    run = user.run_pipeline(make_pipeline(user, site.gateway))
    with cloud.node(site.tokens["n1"]) as node:
        [activity] = node.claim_activity_runs(epoch=1, wait=0)
        first, _second = _plan_two(node, activity["id"])
        with pytest.raises(Retryable):  # before its placement: the worker sends it again later
            node.report_shard(first, {"attempt": 1, "node": "n1", "status": "running", "bytes": 3})
        place(node, first, "n1")
        node.report_shard(first, {"attempt": 1, "node": "n1", "status": "running", "bytes": 7})
        node.report_shard(first, {"attempt": 1, "node": "n1", "status": "placed",
                                  "wait_reason": "every node is at its concurrent-job limit"})
    shard = _activity(user, run["id"])["shards"][0]
    assert shard["status"] == "running" and shard["bytes"] == 7 and shard["started_at"] is not None
