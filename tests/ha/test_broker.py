"""The site's Redis restarts under a running activity (SIGTERM: it writes its AOF).

Given an embedded site of two nodes copying a throttled folder, when Redis stops and
starts again on the same port and data dir, then every node shows Limited ("broker
unreachable") while it is away, every node comes back Online by itself (Celery
worker, agent, dispatcher and load publisher reconnect; the dispatcher lease is taken
again), and the run completes with every file byte-identical and every shard's
files and bytes accounted once.

Given the same site copying, when Redis is stopped and started five times in a row (down
0.5 to 5 s), then a new run succeeds, and 60 s after the last restart every node's ``dmg
node start`` and Celery worker are the processes it started with (kombu 5.7.0 used to kill
the workers: see ``workers/brokerloss.py``), every node is Online with its pool at its limit.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from dmg.cli.demo import KIB
from dmg.embedded.faults import SiteUnderTest
from tests.ha.sitekit import (
    all_nodes,
    assert_copied_exactly,
    figure,
    ha_settings,
    limited_by,
    node_rows,
    online,
    require_redis,
    running_site,
    shard_statuses,
    throttled_copy,
    wait_for,
)
from workers.agent.node_agent import BROKER_UNREACHABLE
from workers.app import make_app
from workers.names import worker_hostname

pytestmark = pytest.mark.integration


def test_a_redis_restart_loses_no_work_and_nodes_recover(tmp_path: Path) -> None:
    require_redis()
    site = SiteUnderTest(ha_settings(tmp_path / "site"), nodes=2, node_concurrency=2, flower=False,
                         startup_timeout=60)
    with running_site(site), site.client() as client:
        copy = throttled_copy(client, site, tmp_path, files=32, bandwidth=64 * KIB)
        run_id = client.run_pipeline(copy.pipeline)["id"]
        wait_for(lambda: "running" in shard_statuses(client, run_id), timeout=30, what="a shard running")

        site.stop_redis()
        wait_for(lambda: all_nodes(client, site, limited_by(BROKER_UNREACHABLE)), timeout=20,
                 what="every node Limited: broker unreachable")
        # Keep it away until the heartbeat keys have expired (the nodes' own beats, sent to
        # the cloud, are the clock): on its return every node at first looks dead to it.
        first = {n: r["last_heartbeat"] for n, r in node_rows(client, site).items()}
        expired = site.settings.offline_after + 1
        wait_for(lambda: all(r["status"] == "Limited" and r["last_heartbeat"] > first[n] + expired
                             for n, r in node_rows(client, site).items()),
                 timeout=30, what="the outage to outlast the heartbeat TTL")
        assert "running" in shard_statuses(client, run_id)  # work in flight across the outage
        site.start_redis()
        restarted = time.monotonic()
        wait_for(lambda: all_nodes(client, site, online), timeout=60, what="every node Online again")
        figure(site, "redis_restart_to_nodes_online_s", time.monotonic() - restarted)

        wait_for(lambda: client.run(run_id)["status"] in ("Succeeded", "Failed"), timeout=120,
                 what="the run to end")
        assert_copied_exactly(client, run_id, copy)
        roles = sorted(r["role"] for r in client.list_nodes(site.gateway))
        assert roles == ["dispatcher", "worker"]


#: Seconds Redis stays down in each of the five restarts: some short, one longer than the
#: offline threshold (3 s), so the nodes' heartbeat keys expire meanwhile.
RESTART_GAPS = (0.5, 2.0, 1.0, 5.0, 1.0)
#: Seconds between a restart and the next stop: the copies run on meanwhile.
UP_BETWEEN = 2.0
#: How long after the last restart every node process must still be the same, alive one.
STILL_ALIVE_AFTER = 60.0


def test_nodes_survive_five_redis_restarts_during_copies(tmp_path: Path) -> None:
    """Given two nodes copying, when Redis is stopped (SIGTERM) and started again five times,
    then a new run succeeds, and 60 s after the last restart every node's processes are the
    ones it started with, Online, its pool at its limit (Celery's own stats say so)."""
    require_redis()
    site = SiteUnderTest(ha_settings(tmp_path / "site"), nodes=2, node_concurrency=2, flower=False,
                         startup_timeout=60)
    with running_site(site), site.client() as client:
        before = {name: node_processes(site, name) for name in site.node_names}
        copy = throttled_copy(client, site, tmp_path / "first", files=32, bandwidth=24 * KIB)
        run_id = client.run_pipeline(copy.pipeline)["id"]
        wait_for(lambda: "running" in shard_statuses(client, run_id), timeout=30, what="a shard running")

        for gap in RESTART_GAPS:
            site.stop_redis()
            time.sleep(gap)  # the outage itself: how long Redis stays down
            site.start_redis()
            wait_for(lambda: all_nodes(client, site, online), timeout=30, what="every node Online again")
            time.sleep(UP_BETWEEN)  # let the copies run before the next outage
        last_restart = time.monotonic()

        wait_for(lambda: client.run(run_id)["status"] in ("Succeeded", "Failed"), timeout=STILL_ALIVE_AFTER,
                 what="the first run to end")
        assert_copied_exactly(client, run_id, copy)
        # a new run, inside the watch: the site works after the restarts, and keeps working
        again = throttled_copy(client, site, tmp_path / "second", files=8, bandwidth=1024 * KIB, name="again")
        second = client.run_pipeline(again.pipeline)["id"]
        wait_for(lambda: client.run(second)["status"] in ("Succeeded", "Failed"), timeout=30,
                 what="the new run to end")
        assert_copied_exactly(client, second, again)
        time.sleep(max(0.0, last_restart + STILL_ALIVE_AFTER - time.monotonic()))

        after = {name: node_processes(site, name) for name in site.node_names}
        assert after == before, f"node processes changed: {before} -> {after}"
        assert all_nodes(client, site, online), node_rows(client, site)
        for name in site.node_names:
            assert pool_size(site, name) == 2, f"{name}'s pool is not at its limit"


def node_processes(site: SiteUnderTest, name: str) -> tuple[int, int]:
    """The pids of node ``name``'s ``dmg node start`` process and of its Celery worker."""
    node_pid = site.pid_of(name)
    assert node_pid is not None, f"{name} is not running"
    workers = [p for p in psutil.Process(node_pid).children() if "celery" in " ".join(p.cmdline())]
    assert len(workers) == 1, f"{name} has no single Celery worker: {workers}"
    return node_pid, workers[0].pid


def pool_size(site: SiteUnderTest, name: str) -> int:
    """How many pool processes node ``name``'s worker reports (Celery's ``inspect stats``)."""
    app = make_app(site.settings.replace(gateway=site.gateway))
    hostname = worker_hostname(name, site.gateway)
    try:
        stats = app.control.inspect(destination=[hostname], timeout=3).stats() or {}
    finally:
        app.close()
    return len(((stats.get(hostname) or {}).get("pool") or {}).get("processes") or [])
