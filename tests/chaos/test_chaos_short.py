"""The chaos suite, CI-sized: ``bench/chaos.py --short`` run in this process.

A 3-node embedded site copies 36 throttled activities (files to a file store, CSV and
JSON Lines files to SQL tables, key ranges of SQL tables to SQL tables) while nodes
are SIGKILLed and restarted (the second kill always the dispatcher's node) and Redis
restarts twice (SIGTERM, same data dir) during the copies, each time, if it comes
within 30 s, while a node runs shards with a free slot (the case kombu 5.7.0 killed
workers in; without workers/brokerloss.py this test fails). Every file and row of the
sinks is then checked against the sources: nothing lost, duplicated or corrupted,
every run Succeeded; and every node process the run started or restarted (each node's
``dmg node start`` and its Celery worker, by pid) is still alive ``SHORT.settle`` s
after the last fault. Timings are printed, never asserted.
Every process the run starts is stopped by ``run_chaos`` itself, also on failure (also when
a timeout interrupts the graceful stop: the site SIGKILLs the rest), and the test fails if
one of them (the cloud, Redis, a node or its worker) is still alive after that stop.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.chaos import SHORT, render, run_chaos
from tests.ha.sitekit import require_redis

pytestmark = pytest.mark.integration


def test_nothing_is_lost_duplicated_or_corrupted_and_no_node_dies_under_kills_and_redis_restarts(
        tmp_path: Path) -> None:
    require_redis()

    summary = run_chaos(SHORT, tmp_path)

    print(render(summary))
    print(json.dumps(summary["kill_log"], indent=1))
    assert (summary["lost"], summary["duplicated"], summary["corrupted"]) == (0, 0, 0), summary["problems"]
    assert summary["runs"] == ["Succeeded"]
    assert summary["activities_succeeded"] == SHORT.activities
    assert summary["staging_cleaned"] and summary["staging_leftovers"] == 0
    assert summary["files"] > 0 and summary["rows"] > 0
    # the faults happened while the runs ran, and the site got over each of them
    assert summary["kills"] == SHORT.kills, summary["kill_log"]
    assert summary["redis_restarts"] == SHORT.redis_restarts >= 2, summary["redis"]
    assert all(r["online_s"] is not None for r in summary["redis"]), summary["redis"]
    assert summary["kill_log"][1]["dispatcher"], summary["kill_log"]  # the 2nd kill, always
    assert summary["dispatcher_kills"] >= 1 and summary["failovers"] == summary["dispatcher_kills"]
    assert summary["node_processes"] == 2 * SHORT.nodes, summary
    assert summary["nodes_all_alive"] and summary["node_processes_alive"] == summary["node_processes"], \
        summary["dead_processes"]
    assert summary["shards_reattempted"] >= 1
    for kill in summary["kill_log"]:
        assert kill["elsewhere_s"] is not None, kill
        assert kill["back_online_s"] is not None, kill
        if kill["dispatcher"]:
            assert kill["successor"] not in ("", kill["node"]), kill
    assert summary["survivors"] == [], summary["survivors"]  # the run's stop left no process behind
    assert summary["ok"]
