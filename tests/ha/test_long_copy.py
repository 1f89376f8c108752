"""Shards that outlive the broker's visibility timeout run once and commit once.

DESIGN.md's trap: on Redis, a message not acknowledged within the visibility
timeout is handed out again while the first delivery still runs. Given a one-node
site with a 1 s visibility timeout (``DMG_BROKER_VISIBILITY_TIMEOUT``) and a free
pool slot, when two throttled shards (files to a file store, CSV files to SQLite
tables) run for several seconds, then Redis redelivers their messages, each
redelivery finds its attempt running in a live process and does nothing
(counted as a duplicate), each attempt starts once, and the sinks hold every
file and row exactly once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dmg.cli.demo import KIB
from dmg.embedded.site import EmbeddedSite
from tests.ha.nodekit import assert_once, cloud_shards, mixed_copy, run_ended, site_state
from tests.ha.sitekit import ha_settings, require_redis, running_site, wait_for

pytestmark = pytest.mark.integration


def test_a_redelivered_running_shard_is_not_run_twice(tmp_path: Path) -> None:
    require_redis()
    settings = ha_settings(tmp_path / "site", broker_visibility_timeout=1.0)
    site = EmbeddedSite(settings, nodes=1, node_concurrency=3, flower=False, startup_timeout=60)
    with running_site(site), site.client() as client, site_state(site) as state:
        copy = mixed_copy(client, site, tmp_path, files=4, tables=4, rows=400, bandwidth=16 * KIB,
                          name="long")
        run_id = client.run_pipeline(copy.pipeline)["id"]

        def planned() -> list[str]:
            ids = list(cloud_shards(client, run_id))
            return ids if len(ids) == 2 else []

        shard_ids = wait_for(planned, timeout=30, what="the run planned")

        def duplicates() -> int:
            return sum((state.shard(s) or {}).get("duplicates", 0) for s in shard_ids)

        wait_for(duplicates, timeout=30, what="Redis to redeliver a running shard's message")
        wait_for(lambda: run_ended(client, run_id), timeout=60, what="the run to end")

        assert_once(client, run_id, copy)
        for shard_id in shard_ids:
            stored = state.shard(shard_id)
            assert stored is not None and stored["deliveries"] == 1, stored  # started once
        assert {s["attempt"] for s in cloud_shards(client, run_id).values()} == {1}
        print(f"redeliveries refused as duplicates: {duplicates()}")
