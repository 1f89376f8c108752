"""A node's log at INFO says what happens, not every heartbeat.

Given a site whose node and cloud log at INFO with a heartbeat every 0.5 s, when it runs
for a few seconds and copies a folder, then neither the node's log (agent, dispatcher and
Celery worker) nor the cloud's has a line per heartbeat or per HTTP request, and the
node's has each shard's own end line (its start is DEBUG) but not Celery's line per task
("Task ... received", "Task ... succeeded in ...": DEBUG only).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import pytest

from dmg.embedded.site import EmbeddedSite
from tests.ha.sitekit import (
    assert_copied_exactly,
    ha_settings,
    require_redis,
    running_site,
    throttled_copy,
    wait_for,
)

pytestmark = pytest.mark.integration


def info_lines(path: Path) -> list[str]:
    """The log's INFO lines, numbers and ids blanked out (so repeats look alike)."""
    lines = [line for line in path.read_text(errors="replace").splitlines() if "INFO" in line]
    return [re.sub(r"[0-9a-f]{6,}|\d+", "#", line.split("INFO", 1)[1]) for line in lines]


def test_heartbeats_and_requests_are_not_logged_at_info(tmp_path: Path) -> None:
    require_redis()
    settings = ha_settings(tmp_path / "site", log_level="INFO", heartbeat_interval=0.5)
    with running_site(EmbeddedSite(settings, nodes=1, flower=False, node_concurrency=1)) as site:
        started = time.monotonic()
        with site.client() as client:
            copy = throttled_copy(client, site, tmp_path / "copy", files=8, bandwidth=4 * 1024 * 1024)
            run_id = str(client.run_pipeline(copy.pipeline)["id"])
            wait_for(lambda: client.run(run_id)["status"] in ("Succeeded", "Failed"), timeout=60,
                     what="the run to end")
            assert_copied_exactly(client, run_id, copy)
        time.sleep(max(0.0, 6 - (time.monotonic() - started)))  # >= 12 heartbeats

    for log in (site.log_dir / "node1.log", site.log_dir / "cloud.log"):
        lines = info_lines(log)
        assert lines, f"{log} has no INFO line at all"
        # Migrations are logged once at start, by name (0009's name mentions heartbeats).
        per_event = [line for line in lines if "alembic.runtime.migration" not in line]
        assert not [line for line in per_event if "HTTP Request" in line or "heartbeat" in line.lower()], log
        repeated = {line: n for line, n in Counter(lines).items() if n >= 5}
        assert repeated == {}, (log, repeated)

    node_lines = [line for line in (site.log_dir / "node1.log").read_text(errors="replace").splitlines()
                  if "INFO" in line]
    assert [line for line in node_lines if "shard succeeded" in line], "no shard's end at INFO"
    celery_per_task = [line for line in node_lines if "] received" in line or "] succeeded in" in line]
    assert celery_per_task == [], celery_per_task[:3]
