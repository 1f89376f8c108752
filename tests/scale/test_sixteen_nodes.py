"""No node cap but a setting: one sharded activity on a 16-node gateway, one machine.

Given an embedded site of 16 nodes (one job each) whose cloud allows at most 16
nodes per gateway, when one file→file activity of 48 files (one file per shard)
runs, then the cloud's run record shows every one of the 16 nodes running
shards, the sink matches the source byte for byte, and a 17th node cannot
register (the setting is the only cap).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmg.cli.demo import compare_trees
from dmg.embedded.site import EmbeddedSite
from tests.cli.conftest import assert_one_line_error
from tests.scale.support import KIB, copy_pipeline, dmg_for, finished, need_redis, site_settings, write_files

pytestmark = pytest.mark.integration

NODES = 16


@pytest.fixture
def site(tmp_path: Path) -> Iterator[EmbeddedSite]:
    need_redis()
    running = EmbeddedSite(site_settings(tmp_path / "data", max_nodes_per_gateway=NODES), nodes=NODES,
                           node_concurrency=1, flower=False, startup_timeout=180)
    try:
        running.start()
        yield running
    finally:
        running.stop()


def test_one_activity_runs_on_all_sixteen_nodes(site: EmbeddedSite, tmp_path: Path) -> None:
    source, sink = tmp_path / "source", tmp_path / "sink"
    write_files(source, 3 * NODES, 64 * KIB)
    copy_pipeline(site, source, sink)

    with site.client() as client:
        run = client.run_pipeline("spread")
    done = finished(site, run["id"], timeout=120)

    assert done["status"] == "Succeeded", done
    [activity] = done["activity_runs"]
    shards = activity["shards"]
    assert len(shards) == 3 * NODES and {s["status"] for s in shards} == {"succeeded"}
    per_node = Counter(s["node"] for s in shards)
    assert sorted(per_node) == sorted(site.node_names), per_node  # every node took part
    assert sum(s["files"] for s in shards) == 3 * NODES
    diff = compare_trees(source, sink)
    assert diff.matches and diff.compared == 3 * NODES, diff.describe()

    # The cap is the cloud's setting: a 17th node is refused with a hint how to raise it.
    dmg = dmg_for(site, tmp_path)
    refused = dmg("node", "register", "--cloud", site.settings.cloud_url, "--key",
                  site.gateway_keys["key1"], "--name", "node17")
    message = assert_one_line_error(refused, contains="already has 16 nodes")
    assert "DMG_MAX_NODES_PER_GATEWAY" in message
