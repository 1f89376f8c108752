"""Adding a node: it takes work within seconds, and queued shards move to it.

Given a one-node site (one job, up to 20 shards queued per node) running an
activity of 16 one-file shards, throttled so they pile up in node1's queue,
when a second node is registered (``dmg node register``) and started (``dmg node
start``), then node2 runs shards that had been queued on node1 (the dispatcher
moved them with new attempts), the messages node1 still held for the old
attempts do nothing, and the run ends with every shard succeeded exactly once
and the sink equal to the source byte for byte.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from dmg.cli.demo import compare_trees
from dmg.embedded.faults import SiteUnderTest
from dmg.site.state import SiteState
from tests.scale.support import (
    KIB,
    copy_pipeline,
    dmg_for,
    finished,
    need_redis,
    site_settings,
    task_results,
    wait_for,
    write_files,
)

pytestmark = pytest.mark.integration

SHARDS = 16


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SiteUnderTest]:
    need_redis()
    running = SiteUnderTest(site_settings(tmp_path / "data", max_queued_per_node=20), nodes=1,
                            node_concurrency=1, flower=False, startup_timeout=90)
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture
def state(site: SiteUnderTest) -> Iterator[SiteState]:
    client = redis_lib.Redis.from_url(site.broker_url())
    yield SiteState(client, site.gateway)
    client.close()


def shards_of(site: SiteUnderTest, run_id: str) -> list[dict[str, Any]]:
    with site.client() as client:
        return [s for a in client.run(run_id)["activity_runs"] for s in a["shards"]]


def activity_run_id(site: SiteUnderTest, run_id: str) -> str:
    with site.client() as client:
        [activity_run] = client.run(run_id)["activity_runs"]
    return str(activity_run["id"])


def test_a_new_node_takes_queued_shards_and_each_runs_once(site: SiteUnderTest, state: SiteState,
                                                          tmp_path: Path) -> None:
    source, sink = tmp_path / "source", tmp_path / "sink"
    write_files(source, SHARDS, 16 * KIB)
    # 4 KiB/s for the whole activity: a shard takes ~4 s, so node1's queue stays long.
    copy_pipeline(site, source, sink, options={"bandwidth": 4 * KIB})
    with site.client() as client:
        run = client.run_pipeline("spread")
    wait_for(lambda: len(state.running("node1")) == 1 and len(state.queued("node1")) >= SHARDS // 2,
             timeout=60, what="shards queued on node1 behind its running one")

    dmg = dmg_for(site, tmp_path)
    registered = dmg("node", "register", "--cloud", site.settings.cloud_url, "--key",
                     site.gateway_keys["key1"], "--name", "node2")
    assert registered.returncode == 0, registered.stderr
    site.add_node("node2")  # `dmg node start --name node2` with the registration above

    wait_for(lambda: any(s["node"] == "node2" and s["status"] in ("running", "succeeded")
                         for s in shards_of(site, run["id"])),
             timeout=30, what="node2 to run a shard")
    state.set_bandwidth(activity_run_id(site, run["id"]), 0)  # proven: let the rest finish at full speed
    done = finished(site, run["id"], timeout=90)

    assert done["status"] == "Succeeded", done
    shards = [s for a in done["activity_runs"] for s in a["shards"]]
    assert len(shards) == SHARDS and {s["status"] for s in shards} == {"succeeded"}
    by_node = Counter(s["node"] for s in shards)
    assert by_node["node1"] > 0 and by_node["node2"] > 0, by_node
    moved = [s for s in shards if s["node"] == "node2" and s["attempt"] > 1]
    assert moved, shards  # node2 ran shards first queued on node1
    diff = compare_trees(source, sink)
    assert diff.matches and diff.compared == SHARDS, diff.describe()

    # Exactly once: one succeeded result per shard, from its final attempt; the messages
    # node1 held for the moved shards' first attempts ended as no-ops ("stale").
    for shard in moved:
        wait_for(lambda s=shard: f"{s['id']}:1" in task_results(site), timeout=30,
                 what=f"node1 to drain the old message of {shard['id']}")
    results = task_results(site)
    succeeded = Counter(task_id.rsplit(":", 1)[0] for task_id, r in results.items()
                        if (r.get("result") or {}).get("status") == "succeeded")
    assert succeeded == Counter({s["id"]: 1 for s in shards}), succeeded
    for shard in shards:
        final = results[f"{shard['id']}:{shard['attempt']}"]["result"]
        assert (final["status"], final["node"]) == ("succeeded", shard["node"])
    for shard in moved:
        old = results[f"{shard['id']}:1"]["result"]
        assert (old["status"], old["node"], old["files"]) == ("stale", "node1", 0)
