"""The chaos suite, CI-sized: ``bench/chaos.py --short`` run in this process.

A 3-node embedded site copies 24 throttled activities (files to a file store, CSV and
JSON Lines files to SQL tables, key ranges of SQL tables to SQL tables) while nodes
are SIGKILLed and restarted (one of them the dispatcher's) and Redis restarts once.
Every file and row of the sinks is then checked against the sources: nothing lost,
duplicated or corrupted, every run Succeeded. Timings are printed, never asserted.
Every process the run starts is stopped by ``run_chaos`` itself, also on failure.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.chaos import SHORT, render, run_chaos
from tests.ha.sitekit import require_redis

pytestmark = pytest.mark.integration


def test_nothing_is_lost_duplicated_or_corrupted_under_kills_and_a_redis_restart(tmp_path: Path) -> None:
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
    assert summary["kills"] >= 2 and summary["redis_restarts"] == 1, summary["kill_log"]
    assert summary["dispatcher_kills"] >= 1 and summary["failovers"] == summary["dispatcher_kills"]
    assert summary["shards_reattempted"] >= 1
    for kill in summary["kill_log"]:
        assert kill["elsewhere_s"] is not None, kill
        assert kill["back_online_s"] is not None, kill
        if kill["dispatcher"]:
            assert kill["successor"] not in ("", kill["node"]), kill
    assert summary["ok"]
