"""Planning activity runs into shards, against real Redis and a real file store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dispatcher.planner import plan_activity_run
from dispatcher.reports import PlacementOutbox, PlacementSender
from dmg.errors import Retryable
from dmg.ids import shard_id
from dmg.site.state import SiteState
from settings import Settings
from tests.dispatcher.memcloud import MemoryCloud
from tests.workers.support import file_store, write_files

SETTINGS = Settings(shard_max_files=2, shard_max_bytes=1_000_000)


def activity_run(tmp_path: Path, path: str = "in", run_id: str = "ar1") -> dict[str, Any]:
    return {"id": run_id, "run_id": "r1", "name": "copy-in",
            "source": {"store": file_store("src", tmp_path / "src").to_json(), "path": path},
            "sink": {"store": file_store("dst", tmp_path / "dst").to_json(), "path": "out"},
            "options": {"bandwidth": 0}}


def recorded_plans(state: SiteState) -> dict[str, list[list[dict[str, Any]]]]:
    """The plans waiting in the site's report list for the cloud, by activity run."""
    plans: dict[str, list[list[dict[str, Any]]]] = {}
    for raw in state.redis.lrange(state.keys.placements, 0, -1):
        entry = json.loads(raw)
        if "plan" in entry:
            plans.setdefault(entry["plan"]["activity_run_id"], []).append(entry["plan"]["shards"])
    return plans


def test_a_source_is_cut_into_shards_saved_planned_and_queued(tmp_path: Path, state: SiteState) -> None:
    write_files(tmp_path / "src" / "in", {"a": 10, "b": 20, "c": 30, "d/e": 40, "f": 1_200_000})
    cloud = MemoryCloud()

    plan = plan_activity_run(activity_run(tmp_path), state=state, cloud=cloud, epoch=7, settings=SETTINGS)

    ids = [shard_id("ar1", i) for i in range(3)]
    assert ids == ["ar1-00000", "ar1-00001", "ar1-00002"]
    assert plan.shards == [{"id": ids[0], "index": 0, "files": 2, "bytes": 30},
                           {"id": ids[1], "index": 1, "files": 2, "bytes": 70},
                           {"id": ids[2], "index": 2, "files": 1, "bytes": 1_200_000}]
    assert recorded_plans(state) == {"ar1": [plan.shards]} and cloud.plans == {}  # no request made
    assert state.pending() == ids == plan.queued
    shard = state.shard(ids[1])
    assert shard is not None and shard["attempt"] == 0
    spec = shard["spec"]
    assert [e["path"] for e in spec["entries"]] == ["in/c", "in/d/e"]
    assert spec["source"] == {"store": file_store("src", tmp_path / "src").to_json(), "path": "in"}
    assert spec["sink"]["path"] == "out" and spec["sink"]["store"]["name"] == "dst"
    assert (spec["shard_id"], spec["activity_run_id"], spec["index"]) == (ids[1], "ar1", 1)
    assert spec["options"] == {"bandwidth": 0}


def test_replaying_an_activity_run_queues_nothing_twice(tmp_path: Path, state: SiteState) -> None:
    write_files(tmp_path / "src" / "in", {"a": 1, "b": 2, "c": 3})
    cloud = MemoryCloud()
    first = plan_activity_run(activity_run(tmp_path), state=state, cloud=cloud, epoch=1, settings=SETTINGS)
    state.drop_pending(first.shards[0]["id"])
    state.new_attempt(first.shards[0]["id"], "a")  # placed meanwhile
    write_files(tmp_path / "src" / "in", {"z": 5})  # the source changed: the plan must not

    again = plan_activity_run(activity_run(tmp_path), state=state, cloud=cloud, epoch=2, settings=SETTINGS)

    assert again.shards == first.shards
    assert again.queued == []
    assert state.pending() == [first.shards[1]["id"]]
    assert recorded_plans(state)["ar1"] == [first.shards, first.shards]  # the cloud takes it once


def test_a_recorded_plan_is_replayed_even_when_its_source_is_gone_now(tmp_path: Path,
                                                                      state: SiteState) -> None:
    # Given a plan recorded by a dispatcher that died before its shards were placed
    write_files(tmp_path / "src" / "in", {"a": 1, "b": 2, "c": 3})
    cloud = MemoryCloud()
    first = plan_activity_run(activity_run(tmp_path), state=state, cloud=cloud, epoch=1, settings=SETTINGS)
    state.redis.delete(state.keys.pending)
    for path in (tmp_path / "src" / "in").iterdir():  # and a source that cannot be listed now
        path.unlink()
    (tmp_path / "src" / "in").rmdir()

    # When the next dispatcher replays it
    again = plan_activity_run(activity_run(tmp_path), state=state, cloud=cloud, epoch=2, settings=SETTINGS)

    # Then the recorded plan is queued again, the activity run is not failed
    assert not again.failed and cloud.failed == {}
    assert again.shards == first.shards and state.pending() == [s["id"] for s in first.shards]


def test_a_run_sent_again_with_its_plan_recorded_is_replayed_without_a_listing(
        tmp_path: Path, state: SiteState) -> None:
    # Given a plan recorded at the site, on its way to the cloud, when the run's claim is
    # answered again (the cloud marks it: "again")
    write_files(tmp_path / "src" / "in", {"a": 1, "b": 2, "c": 3})
    cloud = MemoryCloud()
    first = plan_activity_run(activity_run(tmp_path), state=state, cloud=cloud, epoch=1, settings=SETTINGS)
    listed: list[Any] = []

    def no_listing(spec: Any) -> Any:
        listed.append(spec)
        raise AssertionError("the source was listed again")

    # When it is planned again
    again = plan_activity_run(dict(activity_run(tmp_path), again=True), state=state, cloud=cloud, epoch=1,
                              settings=SETTINGS, connector_factory=no_listing)

    # Then its recorded plan is replayed (nothing queued twice) and the source is not listed
    assert listed == [] and not again.failed and cloud.failed == {}
    assert again.shards == first.shards and again.queued == []
    assert state.pending() == [s["id"] for s in first.shards]


def test_a_missing_source_fails_the_activity_run_clearly(tmp_path: Path, state: SiteState) -> None:
    (tmp_path / "src").mkdir()
    cloud = MemoryCloud()

    plan = plan_activity_run(activity_run(tmp_path, path="nowhere"), state=state, cloud=cloud, epoch=3,
                             settings=SETTINGS)

    assert plan.failed
    assert "nowhere does not exist in store 'src'" in cloud.failed["ar1"]
    assert cloud.failed["ar1"].startswith("cannot plan activity 'copy-in'")
    assert recorded_plans(state) == {} and state.pending() == []


def test_a_path_escaping_the_store_fails_as_permission_denied(tmp_path: Path, state: SiteState) -> None:
    (tmp_path / "src").mkdir()
    cloud = MemoryCloud()
    plan_activity_run(activity_run(tmp_path, path="../etc"), state=state, cloud=cloud, epoch=3,
                      settings=SETTINGS)
    assert "outside store 'src'" in cloud.failed["ar1"]


def test_an_empty_source_plans_no_shard(tmp_path: Path, state: SiteState) -> None:
    (tmp_path / "src" / "in").mkdir(parents=True)
    cloud = MemoryCloud()
    plan = plan_activity_run(activity_run(tmp_path), state=state, cloud=cloud, epoch=1, settings=SETTINGS)
    assert plan.shards == [] and recorded_plans(state) == {"ar1": [[]]} and state.pending() == []


def test_planning_needs_no_cloud_and_the_plan_reaches_it_before_the_placements(
        tmp_path: Path, state: SiteState) -> None:
    # Given a cloud that cannot be reached
    write_files(tmp_path / "src" / "in", {"a": 1, "b": 2, "c": 3})
    cloud = MemoryCloud()
    cloud.fail_plans.append(Retryable("cannot reach the cloud"))

    # When an activity run is planned and its first shard placed
    plan = plan_activity_run(activity_run(tmp_path), state=state, cloud=cloud, epoch=1, settings=SETTINGS)
    outbox = PlacementOutbox(state)
    outbox.report_shard(plan.shards[0]["id"], {"attempt": 1, "node": "a", "status": "placed",
                                               "wait_reason": ""})

    # Then its shards are queued at once, and the plan waits in the list ahead of the placement
    assert state.pending() == ["ar1-00000", "ar1-00001"]
    state.redis.set(state.keys.epoch, 1)  # this dispatcher holds the lease's epoch 1
    sender = PlacementSender(state, cloud, epoch=lambda: 1)
    assert sender.send_once(1) == "wait" and cloud.plans == {} and outbox.pending() == 2
    # And once the cloud is back it gets the plan, then the placement, in that order
    assert sender.send_once(1) == "sent" and outbox.pending() == 0
    assert cloud.plans == {"ar1": [plan.shards]} and list(cloud.placed()) == ["ar1-00000"]


def test_shards_are_sized_by_the_work_and_the_free_slots(tmp_path: Path, state: SiteState) -> None:
    # Given two online nodes with 3 free slots each, and a source of 12 files of 4 MiB
    for node in ("a", "b"):
        state.publish_heartbeat(node, {"limit": 3}, ttl=30)
    write_files(tmp_path / "src" / "in", {f"big{i:02d}": 4 * 1024 * 1024 for i in range(12)})
    wide = Settings(shard_max_files=2000, shard_max_bytes=256 * 1024 * 1024)

    # When it is planned with the default caps (one shard of 48 MiB before)
    plan = plan_activity_run(activity_run(tmp_path), state=state, cloud=MemoryCloud(), epoch=1, settings=wide)

    # Then every free slot gets a shard, and no file is in two
    assert 6 <= len(plan.shards) <= 12
    assert sum(s["files"] for s in plan.shards) == 12


def test_many_small_files_make_few_shards(tmp_path: Path, state: SiteState) -> None:
    state.publish_heartbeat("a", {"limit": 2}, ttl=30)
    write_files(tmp_path / "src" / "in", {f"s{i:04d}": 10 for i in range(900)})
    wide = Settings(shard_max_files=2000, shard_max_bytes=256 * 1024 * 1024)

    plan = plan_activity_run(activity_run(tmp_path), state=state, cloud=MemoryCloud(), epoch=1, settings=wide)

    assert len(plan.shards) == 1  # 15 with the old 64 files a shard; tiny files: 1,250 a shard
    assert all(s["files"] >= 200 for s in plan.shards) and sum(s["files"] for s in plan.shards) == 900
