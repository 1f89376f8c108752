"""A node, or the dispatcher's node, dies (SIGKILL of every process) under running work.

One embedded site of three nodes (two jobs each, so that the survivors have room
for a dead node's shards at once), offline after 3 s, a 2 s lease,
heartbeats every 0.5 s; each test runs a throttled pipeline that copies a folder
to a file store and CSV files to SQLite tables, and kills a node mid-copy.

- A worker node dies: it shows Offline; the shards queued or running on it run
  again on other nodes with new attempts; the run succeeds with every file and
  row exactly once. When the node starts again it rejoins, cleans the staging
  left by its dead attempts, ignores the stale messages waiting for it, and takes
  work again.
- The dispatcher's node dies: another node takes the lease with a higher epoch and
  carries on (claims, plans, places, recovers the dead node's shards); nothing is
  lost or placed twice. A dispatcher paused past its lease (SIGSTOP) stops placing
  before another starts and, resumed, places nothing.

Measured, not asserted (``FIGURE`` lines): kill -> every shard of the dead node
running elsewhere, and dispatcher kill -> next placement.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from dmg.cli.demo import KIB
from dmg.embedded.faults import SiteUnderTest
from tests.ha.nodekit import (
    assert_once,
    cloud_shards,
    dispatcher_of,
    epoch_of,
    mixed_copy,
    run_ended,
    site_state,
    successor_of,
    wait_running_elsewhere,
    work_of,
)
from tests.ha.sitekit import (
    all_nodes,
    figure,
    module_site,
    node_rows,
    online,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteUnderTest]:
    yield from module_site(tmp_path_factory, nodes=3, node_concurrency=2)


def test_a_dead_node_s_shards_run_again_elsewhere_and_it_rejoins(site: SiteUnderTest, tmp_path: Path) -> None:
    with site.client() as client, site_state(site) as state:
        copy = mixed_copy(client, site, tmp_path, files=12, tables=4, rows=400, bandwidth=32 * KIB,
                          name="node-death")
        run_id = client.run_pipeline(copy.pipeline)["id"]
        leader = wait_for(lambda: dispatcher_of(state) or "", timeout=10, what="a dispatcher")
        victim = wait_for(lambda: next((n for n in site.node_names if n != leader and state.running(n)),
                                       ""), timeout=30, what="a worker node running a shard")
        work = work_of(state, victim)

        killed = time.monotonic()
        site.kill_node(victim)
        took = wait_running_elsewhere(state, work, victim, since=killed, timeout=30)
        figure(site, "node_kill_to_shards_running_elsewhere_s", took)
        print(f"{victim} was killed with {len(work)} shard(s) queued or running")
        wait_for(lambda: node_rows(client, site)[victim]["status"] == "Offline", timeout=30,
                 what=f"{victim} Offline")
        wait_for(lambda: run_ended(client, run_id), timeout=120, what="the run to end")

        shards = cloud_shards(client, run_id)
        moved = [s for s in work if shards[s]["node"] != victim]
        assert moved, shards  # the kill landed mid-copy
        for shard_id in moved:
            assert shards[shard_id]["attempt"] > 1, shards[shard_id]
        leftovers = [p.name for p in copy.sink.iterdir() if p.name.startswith(".dmg-staging.")]

        # The node comes back: it rejoins, cleans its dead attempts' staging, runs no stale message.
        site.start_node(victim)
        wait_for(lambda: all_nodes(client, site, online), timeout=30, what=f"{victim} Online again")
        wait_for(lambda: state.started(victim) == set(), timeout=30, what="its staging cleaned up")
        wait_for(lambda: state.redis.llen(state.keys.celery(f"node.{victim}")) == 0, timeout=30,
                 what="the stale messages in its queue consumed")
        assert_once(client, run_id, copy)
        assert cloud_shards(client, run_id) == shards  # the stale messages changed nothing
        print(f"staging leftovers of the dead attempts (cleaned at restart): {leftovers}")

        # ... and takes work again.
        again = mixed_copy(client, site, tmp_path / "again", files=12, tables=0, bandwidth=0,
                           name="after-death")
        second = client.run_pipeline(again.pipeline)["id"]
        wait_for(lambda: run_ended(client, second), timeout=90, what="the second run to end")
        assert_once(client, second, again)
        assert victim in {s["node"] for s in cloud_shards(client, second).values()}


def test_the_dispatcher_dies_and_another_node_carries_on(site: SiteUnderTest, tmp_path: Path) -> None:
    with site.client() as client, site_state(site) as state:
        wait_for(lambda: all_nodes(client, site, online), timeout=30, what="every node Online")
        copy = mixed_copy(client, site, tmp_path, files=12, tables=4, rows=400, bandwidth=32 * KIB,
                          name="dispatcher-death")
        run_id = client.run_pipeline(copy.pipeline)["id"]
        leader = wait_for(lambda: dispatcher_of(state) or "", timeout=10, what="a dispatcher")
        wait_for(lambda: state.running(leader), timeout=30, what="the dispatcher's node running a shard")
        epoch = epoch_of(state)
        work = work_of(state, leader)

        assert dispatcher_of(state) == leader
        killed = time.monotonic()
        site.kill_node(leader)
        successor = wait_for(lambda: successor_of(state, leader),
                             timeout=30, what="another node to take the lease")
        new_epoch = epoch_of(state)
        assert new_epoch > epoch
        figure(site, "dispatcher_kill_to_new_lease_s", time.monotonic() - killed)
        shard_ids = list(cloud_shards(client, run_id))
        wait_for(lambda: any((state.shard(s) or {}).get("epoch") == new_epoch for s in shard_ids),
                 timeout=30, what="a placement by the new dispatcher", interval=0.02)
        figure(site, "dispatcher_kill_to_next_placement_s", time.monotonic() - killed)
        took = wait_running_elsewhere(state, work, leader, since=killed, timeout=30)
        figure(site, "dispatcher_kill_to_its_shards_running_elsewhere_s", took)
        wait_for(lambda: run_ended(client, run_id), timeout=120, what="the run to end")
        roles = {r["name"]: r["role"] for r in client.list_nodes(site.gateway)}
        assert roles[successor] == "dispatcher"

        site.start_node(leader)
        wait_for(lambda: all_nodes(client, site, online), timeout=30, what=f"{leader} Online again")
        wait_for(lambda: state.started(leader) == set(), timeout=30, what="its staging cleaned up")
        assert_once(client, run_id, copy)
        # New work after the failover is claimed (higher epoch) and placed once.
        again = mixed_copy(client, site, tmp_path / "again", files=8, tables=4, bandwidth=0, name="after")
        second = client.run_pipeline(again.pipeline)["id"]
        wait_for(lambda: run_ended(client, second), timeout=60, what="a run submitted after the failover")
        assert_once(client, second, again)


def test_a_paused_dispatcher_stops_placing_before_another_takes_over(site: SiteUnderTest,
                                                                    tmp_path: Path) -> None:
    with site.client() as client, site_state(site) as state:
        wait_for(lambda: all_nodes(client, site, online), timeout=30, what="every node Online")
        leader = wait_for(lambda: dispatcher_of(state) or "", timeout=10, what="a dispatcher")
        epoch = epoch_of(state)
        (process,) = [c.proc for c in site.children() if c.name == leader]
        copy = mixed_copy(client, site, tmp_path, files=16, tables=4, bandwidth=32 * KIB, name="paused")
        run_id = client.run_pipeline(copy.pipeline)["id"]
        wait_for(lambda: state.pending() or any(state.running(n) for n in site.node_names), timeout=30,
                 what="work claimed")

        psutil.Process(process.pid).send_signal(signal.SIGSTOP)  # the dispatcher thread freezes
        try:
            successor = wait_for(lambda: successor_of(state, leader),
                                 timeout=30, what="another node to take the lease")
        finally:
            psutil.Process(process.pid).send_signal(signal.SIGCONT)
        assert epoch_of(state) > epoch

        wait_for(lambda: run_ended(client, run_id), timeout=120, what="the run to end")
        assert_once(client, run_id, copy)
        assert dispatcher_of(state) == successor
        log = (site.log_dir / f"{leader}.log").read_text(errors="replace")
        assert "lost the dispatcher lease" in log or "placement stopped" in log
