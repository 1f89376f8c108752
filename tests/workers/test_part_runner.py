"""Part shards of one large object: planned once, written by any attempt, committed once.

Real Redis, real file stores, the real planner; attempts are started the way the
dispatcher starts them (``SiteState.new_attempt``) and run with ``run_shard``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from dispatcher.planner import plan_activity_run
from dmg.ids import split_object_id
from dmg.shards.status import OUTCOME_STALE, OUTCOME_SUCCEEDED, STATE_DONE
from dmg.site.splits import DONE, SplitObjects, owner_token
from dmg.site.state import SiteState
from settings import Settings
from tests.dispatcher.memcloud import MemoryCloud
from tests.workers.support import file_store, write_files
from workers.run.reporter import MemoryReporter
from workers.run.shard import run_shard

MIB = 1024 * 1024
SETTINGS = Settings(shard_max_files=4)
OPTIONS = {"split_above": 8 * MIB, "split_part_size": 5 * MIB, "overwrite": "always"}
OBJECT = split_object_id("ar1", 0)


def plan(tmp_path: Path, state: SiteState, cloud: MemoryCloud | None = None) -> list[str]:
    run = {"id": "ar1", "run_id": "r1", "name": "big",
           "source": {"store": file_store("src", tmp_path / "src").to_json(), "path": ""},
           "sink": {"store": file_store("dst", tmp_path / "dst").to_json(), "path": "out"},
           "options": OPTIONS}
    result = plan_activity_run(run, state=state, cloud=cloud or MemoryCloud(), epoch=1, settings=SETTINGS)
    return [s["id"] for s in result.shards]


def run_on(state: SiteState, shard_id: str, node: str, reporter: MemoryReporter) -> Any:
    attempt = state.new_attempt(shard_id, node)
    return run_shard(shard_id, attempt, node=node, state=state, reporter=reporter)


@pytest.fixture
def source(tmp_path: Path) -> tuple[bytes, str]:
    write_files(tmp_path / "src", {"big.bin": 17 * MIB, "small.txt": 100})
    data = (tmp_path / "src" / "big.bin").read_bytes()
    return data, hashlib.md5(data).hexdigest()


def test_the_planner_splits_only_the_large_object_and_a_replay_reuses_its_write(
        tmp_path: Path, state: SiteState, source: tuple[bytes, str]) -> None:
    cloud = MemoryCloud()
    ids = plan(tmp_path, state, cloud)

    specs = [state.shard(i)["spec"] for i in ids]  # type: ignore[index]
    assert [s.get("kind") for s in specs] == [None, "part", "part", "part", "part"]
    assert [e["path"] for e in specs[0]["entries"]] == ["small.txt"]
    parts = [s["part"] for s in specs[1:]]
    assert [(p["part_number"], p["offset"], p["length"]) for p in parts] == [
        (1, 0, 5 * MIB), (2, 5 * MIB, 5 * MIB), (3, 10 * MIB, 5 * MIB), (4, 15 * MIB, 2 * MIB)]
    # The plan as it goes to the cloud (in the lease holder's report list): two files in all.
    assert sum(s["files"] for s in json.loads(state.redis.get(state.keys.plan("ar1")) or "[]")) == 2
    handle = parts[0]["handle"]
    assert SplitObjects(state).handle(OBJECT) == handle
    staging = list((tmp_path / "dst" / "out").iterdir())
    assert [p.name for p in staging] == [handle["staging"]]  # begun once: one staging file

    state.redis.delete(state.keys.plan("ar1"))  # a plan cut again (the record lost) reuses the write
    plan(tmp_path, state)
    assert [p.name for p in (tmp_path / "dst" / "out").iterdir()] == [handle["staging"]]


def test_parts_on_several_nodes_commit_once_and_count_the_object_once(
        tmp_path: Path, state: SiteState, source: tuple[bytes, str]) -> None:
    data, md5 = source
    ids = plan(tmp_path, state)
    reporter = MemoryReporter()

    outcomes = [run_on(state, shard_id, f"node{i % 3}", reporter) for i, shard_id in enumerate(ids)]

    assert [o.status for o in outcomes] == [OUTCOME_SUCCEEDED] * 5
    assert [o.files for o in outcomes[1:]] == [0, 0, 0, 1]  # the part that completed the set committed
    assert sum(o.bytes for o in outcomes[1:]) == len(data)
    assert hashlib.md5((tmp_path / "dst" / "out" / "big.bin").read_bytes()).hexdigest() == md5
    assert sorted(p.name for p in (tmp_path / "dst" / "out").iterdir()) == ["big.bin", "small.txt"]
    assert SplitObjects(state).marker(OBJECT) == DONE
    finals = [r for _id, r in reporter.reports if r["status"] == OUTCOME_SUCCEEDED and r.get("file_results")]
    big = [f for r in finals for f in r["file_results"] if f["path"] == "out/big.bin"]
    assert len(big) == 1 and big[0]["bytes"] == len(data) and big[0]["checksum"].endswith("-4")


def test_a_committer_that_died_is_replaced_by_its_next_attempt(
        tmp_path: Path, state: SiteState, source: tuple[bytes, str]) -> None:
    _data, md5 = source
    ids = plan(tmp_path, state)
    reporter = MemoryReporter()
    for shard_id in ids[:4]:
        run_on(state, shard_id, "node1", reporter)
    last = ids[4]
    # The last part's first attempt wrote and recorded its part, won the commit, and died.
    first = run_on(state, last, "node2", reporter)
    assert first.files == 1
    objects = SplitObjects(state)
    state.redis.set(state.keys.commit_marker(OBJECT), owner_token(last, 1))
    handle = objects.handle(OBJECT) or {}
    (tmp_path / "dst" / "out" / "big.bin").rename(tmp_path / "dst" / "out" / handle["staging"])
    state.redis.hset(state.keys.shard(last), "state", "running")  # as if never finished

    # Another part re-run meanwhile leaves the commit to the live owner ...
    other = run_on(state, ids[1], "node3", reporter)
    assert (other.status, other.files) == (OUTCOME_SUCCEEDED, 0)
    assert objects.marker(OBJECT) == owner_token(last, 1)
    # ... whose shard runs again with a new attempt (its node was declared dead): it commits.
    second = run_on(state, last, "node3", reporter)

    assert (second.status, second.files, second.attempt) == (OUTCOME_SUCCEEDED, 1, 2)
    assert objects.marker(OBJECT) == DONE
    assert hashlib.md5((tmp_path / "dst" / "out" / "big.bin").read_bytes()).hexdigest() == md5


def test_a_fenced_attempt_records_no_part(tmp_path: Path, state: SiteState,
                                          source: tuple[bytes, str]) -> None:
    ids = plan(tmp_path, state)
    shard_id = ids[1]

    def fence(sent_id: str, report: dict[str, Any]) -> None:
        if sent_id == shard_id and report["status"] == "running" and report["attempt"] == 1:
            state.new_attempt(shard_id, "node2")

    reporter = MemoryReporter(on_report=fence)
    outcome = run_on(state, shard_id, "node1", reporter)

    assert outcome.status == OUTCOME_STALE
    assert SplitObjects(state).parts(OBJECT) == []
    shard = state.shard(shard_id)
    assert shard is not None and shard["attempt"] == 2 and shard["state"] != STATE_DONE
