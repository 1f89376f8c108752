"""The cloud goes away while an activity runs, and comes back on the same address and database.

Given an embedded site of two nodes copying a throttled folder, when the cloud stops
after the run was planned, then the nodes finish every shard anyway (placement needs
only Redis), their reports wait in the nodes' outboxes (and placement reports in the
dispatcher), and once the cloud is back it learns everything: the run Succeeded with
every shard's node, files and bytes, the sink byte-identical, every node Online again,
and the dispatcher claims new work again.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis as redis_lib

from dmg.cli.demo import KIB
from dmg.cli.runview import shards_of
from dmg.embedded.faults import SiteUnderTest
from dmg.shards.status import STATE_DONE
from dmg.site.state import SiteState
from tests.ha.sitekit import (
    all_nodes,
    assert_copied_exactly,
    figure,
    ha_settings,
    online,
    require_redis,
    running_site,
    shard_statuses,
    throttled_copy,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_shards_finish_without_the_cloud_and_it_learns_everything_when_back(tmp_path: Path) -> None:
    require_redis()
    site = SiteUnderTest(ha_settings(tmp_path / "site"), nodes=2, node_concurrency=2, flower=False,
                         startup_timeout=60)
    with running_site(site), site.client() as client:
        copy = throttled_copy(client, site, tmp_path / "a", files=32, bandwidth=64 * KIB)
        run_id = client.run_pipeline(copy.pipeline)["id"]
        wait_for(lambda: "running" in shard_statuses(client, run_id), timeout=30, what="a shard running")
        shard_ids = [s["id"] for s in shards_of(client.run(run_id))]

        site.stop_cloud()
        broker = redis_lib.Redis.from_url(site.broker_url())
        try:
            state = SiteState(broker, site.gateway)
            outboxes = [state.keys.outbox(name) for name in site.node_names]
            wait_for(lambda: all((state.shard(s) or {}).get("state") == STATE_DONE for s in shard_ids),
                     timeout=90, what="every shard done on the nodes while the cloud is away")
            buffered = sum(int(broker.llen(key)) for key in outboxes)
        finally:
            broker.close()
        assert buffered > 0  # the final reports are waiting for the cloud

        site.start_cloud()
        back = time.monotonic()
        wait_for(lambda: client.run(run_id)["status"] == "Succeeded", timeout=60,
                 what="the run Succeeded once the cloud is back")
        figure(site, "cloud_back_to_run_succeeded_s", time.monotonic() - back)
        run = assert_copied_exactly(client, run_id, copy)
        assert {s["node"] for s in shards_of(run)} <= set(site.node_names)
        wait_for(lambda: all_nodes(client, site, online), timeout=30, what="every node Online again")
        figure(site, "cloud_back_to_nodes_online_s", time.monotonic() - back)

        # The dispatcher claims again: a new run goes through.
        again = throttled_copy(client, site, tmp_path / "b", files=4, bandwidth=0, name="after")
        second = client.run_pipeline(again.pipeline)["id"]
        wait_for(lambda: client.run(second)["status"] in ("Succeeded", "Failed"), timeout=60,
                 what="a run submitted after the outage to end")
        assert_copied_exactly(client, second, again)
