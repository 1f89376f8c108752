"""The site's Redis restarts under a running activity (SIGTERM: it writes its AOF).

Given an embedded site of two nodes copying a throttled folder, when Redis stops and
starts again on the same port and data dir, then every node shows Limited ("broker
unreachable") while it is away, every node comes back Online by itself (Celery
worker, agent, dispatcher and load publisher reconnect; the dispatcher lease is taken
again), and the run completes with every file byte-identical and every shard's
files and bytes accounted once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dmg.cli.demo import KIB
from dmg.cli.site import EmbeddedSite
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
from workers.agent import BROKER_UNREACHABLE

pytestmark = pytest.mark.integration


def test_a_redis_restart_loses_no_work_and_nodes_recover(tmp_path: Path) -> None:
    require_redis()
    site = EmbeddedSite(ha_settings(tmp_path / "site"), nodes=2, node_concurrency=2, flower=False,
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
