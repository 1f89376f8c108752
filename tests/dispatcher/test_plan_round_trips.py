"""A plan costs a fixed number of Redis round trips, whatever its number of shards
(against a real Redis; the round trips are counted by the client's connections)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from dispatcher.planner import plan_activity_run
from dispatcher.slots import FreeSlots
from dmg.site import scripts
from dmg.site.boundary import SiteRedis
from dmg.site.plans import QUEUED, record_plan
from dmg.site.state import SiteState
from settings import Settings
from tests.dispatcher.memcloud import MemoryCloud
from tests.dispatcher.test_planner import activity_run, recorded_plans
from tests.workers.support import write_files

SETTINGS = Settings(shard_max_files=2, shard_max_bytes=1_000_000)
#: A fresh plan: the free slots (4: heartbeats, their values, the nodes' loads in one
#: pipeline, the pending list's length), the one script that records it all (and finds a plan
#: recorded before: nothing is read before it).
MOST_ROUND_TRIPS = 5


class CountingConnection(redis_lib.Connection):
    """A connection that counts what it sends: one command, or one whole pipeline."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)


@pytest.fixture
def counted(redis_url: str) -> Iterator[SiteState]:
    client = SiteRedis.from_url(redis_url, connection_class=CountingConnection)
    state = SiteState(client, "gw")
    for node in ("a", "b"):
        state.publish_heartbeat(node, {"limit": 4}, ttl=60)
    client.script_load(scripts.RECORD_PLAN)  # a process loads it once, at its first plan
    yield state
    client.close()


def trips_of(state: SiteState, run: dict[str, Any], *, slots: FreeSlots | None = None) -> int:
    before = CountingConnection.sent
    plan = plan_activity_run(run, state=state, cloud=MemoryCloud(), epoch=1, settings=SETTINGS, slots=slots)
    assert plan.queued and not plan.failed
    return CountingConnection.sent - before


def test_a_plan_costs_the_same_few_round_trips_for_4_or_40_shards(tmp_path: Path, counted: SiteState) -> None:
    # Given sources of 8 and of 80 files (2 files a shard)
    write_files(tmp_path / "src" / "small", {f"f{i:03d}": 10 for i in range(8)})
    write_files(tmp_path / "src" / "large", {f"f{i:03d}": 10 for i in range(80)})

    # When each is planned
    small = trips_of(counted, activity_run(tmp_path, "small", "ar1"))
    large = trips_of(counted, activity_run(tmp_path, "large", "ar2"))

    # Then both cost the same few round trips, and every shard is recorded and queued
    assert small == large <= MOST_ROUND_TRIPS
    assert len(recorded_plans(counted)["ar2"][0]) == 40 and len(counted.pending()) == 44
    shard = counted.shard("ar2-00039")
    assert shard is not None and shard["attempt"] == 0 and shard["state"] == "queued"


def test_a_one_file_plan_reads_no_free_slots(tmp_path: Path, counted: SiteState) -> None:
    write_files(tmp_path / "src" / "one", {"f": 10})
    assert trips_of(counted, activity_run(tmp_path, "one/f", "ar1")) == 1  # the record script alone
    assert counted.pending() == ["ar1-00000"]


def test_planners_share_one_reading_of_the_free_slots(tmp_path: Path, counted: SiteState) -> None:
    # Given 8 free slots read once for every plan (and a second source of 8 files)
    write_files(tmp_path / "src" / "in", {f"f{i:03d}": 10 for i in range(8)})
    slots = FreeSlots(counted, max_age=60)

    # When two runs are planned with it
    first = trips_of(counted, activity_run(tmp_path, "in", "ar1"), slots=slots)
    second = trips_of(counted, activity_run(tmp_path, "in", "ar2"), slots=slots)

    # Then the second reads no load (the first read it in 3 round trips: names and drain
    # flags, every node's figures, the pending count)
    assert second == first - 3 == 1


def test_a_run_cancelled_before_its_plan_is_recorded_queues_nothing(tmp_path: Path,
                                                                   counted: SiteState) -> None:
    write_files(tmp_path / "src" / "in", {"a": 1, "b": 2, "c": 3})
    counted.cancel("ar1")

    plan = plan_activity_run(activity_run(tmp_path), state=counted, cloud=MemoryCloud(), epoch=1,
                             settings=SETTINGS)

    # The plan is recorded (the cloud hears of its shards) but nothing waits for placement
    assert plan.queued == [] and [s["id"] for s in plan.shards] == ["ar1-00000", "ar1-00001"]
    assert recorded_plans(counted) == {"ar1": [plan.shards]} and counted.pending() == []
    assert counted.planning() == set()


def test_a_new_shard_hash_is_written_in_one_command_an_old_one_keeps_its_attempt(
        redis_client: redis_lib.Redis) -> None:
    # Given one shard of a plan whose hash exists already (an earlier attempt 3, running)
    state = SiteState(redis_client, "gw")
    state.redis.hset(state.keys.shard("ar1-00001"), mapping={"attempt": 3, "state": "running", "spec": "old"})
    before = calls(redis_client, "hset", "hsetnx")

    # When a plan of that shard and a new one is recorded
    assert record_plan(state, "ar1", plan_json="[]", ttl=60, report_entry="{}",
                       shards=[("ar1-00000", '{"new": 0}'), ("ar1-00001", '{"new": 1}')]) == QUEUED

    # Then the new shard's hash took one HSET; the old one kept its attempt and state (HSETNX)
    after = calls(redis_client, "hset", "hsetnx")
    assert (after["hset"] - before["hset"], after["hsetnx"] - before["hsetnx"]) == (2, 2)
    new, old = state.shard("ar1-00000"), state.shard("ar1-00001")
    assert new is not None and (new["attempt"], new["state"], new["spec"]) == (0, "queued", {"new": 0})
    assert old is not None and (old["attempt"], old["state"], old["spec"]) == (3, "running", {"new": 1})


def calls(client: redis_lib.Redis, *commands: str) -> dict[str, int]:
    """How many times the test session's Redis ran each of ``commands`` (inside scripts too)."""
    stats = client.info("commandstats")
    return {c: int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in commands}
