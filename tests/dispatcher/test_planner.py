"""Planning activity runs into shards, against real Redis and a real file store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dispatcher.planner import plan_activity_run
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


def test_a_source_is_cut_into_shards_saved_planned_and_queued(tmp_path: Path, state: SiteState) -> None:
    write_files(tmp_path / "src" / "in", {"a": 10, "b": 20, "c": 30, "d/e": 40, "f": 1_200_000})
    cloud = MemoryCloud()

    plan = plan_activity_run(activity_run(tmp_path), state=state, cloud=cloud, epoch=7, settings=SETTINGS)

    ids = [shard_id("ar1", i) for i in range(3)]
    assert ids == ["ar1-00000", "ar1-00001", "ar1-00002"]
    assert plan.shards == [{"id": ids[0], "index": 0, "files": 2, "bytes": 30},
                           {"id": ids[1], "index": 1, "files": 2, "bytes": 70},
                           {"id": ids[2], "index": 2, "files": 1, "bytes": 1_200_000}]
    assert cloud.plans == {"ar1": [plan.shards]}
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
    assert cloud.plans["ar1"] == [first.shards, first.shards]


def test_a_missing_source_fails_the_activity_run_clearly(tmp_path: Path, state: SiteState) -> None:
    (tmp_path / "src").mkdir()
    cloud = MemoryCloud()

    plan = plan_activity_run(activity_run(tmp_path, path="nowhere"), state=state, cloud=cloud, epoch=3,
                             settings=SETTINGS)

    assert plan.failed
    assert "nowhere does not exist in store 'src'" in cloud.failed["ar1"]
    assert cloud.failed["ar1"].startswith("cannot plan activity 'copy-in'")
    assert cloud.plans == {} and state.pending() == []


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
    assert plan.shards == [] and cloud.plans == {"ar1": [[]]} and state.pending() == []


def test_a_cloud_outage_while_planning_is_retried_with_the_same_shards(tmp_path: Path,
                                                                       state: SiteState) -> None:
    write_files(tmp_path / "src" / "in", {"a": 1, "b": 2, "c": 3})
    cloud = MemoryCloud()
    cloud.fail_plans.append(Retryable("cannot reach the cloud"))

    with pytest.raises(Retryable):
        plan_activity_run(activity_run(tmp_path), state=state, cloud=cloud, epoch=1, settings=SETTINGS)
    assert state.pending() == []  # nothing is placed before the cloud knows the shards

    plan = plan_activity_run(activity_run(tmp_path), state=state, cloud=cloud, epoch=1, settings=SETTINGS)
    assert [s["id"] for s in plan.shards] == ["ar1-00000", "ar1-00001"]
    assert state.pending() == ["ar1-00000", "ar1-00001"]


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

    assert 2 <= len(plan.shards) <= 4  # 15 with the old 64 files a shard
    assert all(s["files"] >= 200 for s in plan.shards) and sum(s["files"] for s in plan.shards) == 900
