"""``/metrics`` and JSON logs of a real site (issue 12, "Metrics and logs").

Given a real site (Redis, the cloud, 2 node processes with their Celery workers) started
with ``DMG_LOG_FORMAT=json``; when a throttled folder copy runs and a node is then stopped;
then a Prometheus scrape of the cloud shows a node running jobs during the copy, the run
succeeded +1, exactly the copied bytes and files moved, and the stopped node's status gauge
going from Online to Offline; and every line every process logged is one JSON object with
time, level, logger and message, the worker's lines carry node, shard and attempt, and no
line shows the API token or a node token.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from dmg.cli.demo import compare_trees
from dmg.cli.runview import wait_for_run
from dmg.embedded.faults import SiteUnderTest
from dmg.registration import load as load_registration
from tests.cloud.test_prometheus import Samples, parse, value
from tests.ha.sitekit import (
    assert_copied_exactly,
    figure,
    ha_settings,
    require_redis,
    running_site,
    throttled_copy,
    wait_for,
)
from workers.logsetup import TASK_LOGGERS

pytestmark = pytest.mark.integration

KEYS = {"time", "level", "logger", "message"}


def scrape(site: SiteUnderTest) -> Samples:
    response = httpx.get(site.settings.cloud_url + "/metrics",
                         headers={"Authorization": f"Bearer {site.settings.api_token}"}, timeout=30)
    assert response.status_code == 200, response.text
    return parse(response.text)


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of ``path`` as JSON (AssertionError naming the first that is not)."""
    lines = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            body = json.loads(line)
        except ValueError:
            raise AssertionError(f"{path.name}:{number} is not JSON: {line[:300]}") from None
        assert isinstance(body, dict) and set(body) >= KEYS, f"{path.name}:{number}: {line[:300]}"
        lines.append(body)
    return lines


def test_metrics_follow_a_real_run_and_every_log_line_is_json(tmp_path: Path) -> None:
    require_redis()
    site = SiteUnderTest(ha_settings(tmp_path / "site", log_format="json"), nodes=2, node_concurrency=2,
                         flower=False, startup_timeout=60)
    started = time.monotonic()
    with running_site(site), site.client() as client:
        gw = site.gateway
        wait_for(lambda: all(value(scrape(site), "dmg_node_status", gateway=gw, node=n, status="Online")
                             for n in site.node_names), timeout=30, what="both nodes Online in /metrics")
        before = scrape(site)
        copy = throttled_copy(client, site, tmp_path / "data", files=16)
        run_id = client.run_pipeline(copy.pipeline)["id"]

        # During the copy a node's jobs-running gauge is above 0.
        def busy() -> bool:
            now = scrape(site)
            return any(value(now, "dmg_node_jobs_running", gateway=gw, node=n) > 0 for n in site.node_names)
        wait_for(busy, timeout=30, what="a node running jobs in /metrics", interval=0.2)

        wait_for_run(client, run_id, timeout=90)
        assert_copied_exactly(client, run_id, copy)
        size = compare_trees(copy.source, copy.sink).bytes
        after = scrape(site)
        for status, delta in (("Succeeded", 1), ("Queued", 0), ("InProgress", 0)):
            assert (value(after, "dmg_gateway_activity_runs", gateway=gw, status=status)
                    == value(before, "dmg_gateway_activity_runs", gateway=gw, status=status) + delta), status
        assert (value(after, "dmg_gateway_moved_bytes_total", gateway=gw)
                == value(before, "dmg_gateway_moved_bytes_total", gateway=gw) + size)
        assert (value(after, "dmg_gateway_moved_files_total", gateway=gw)
                == value(before, "dmg_gateway_moved_files_total", gateway=gw) + copy.files)
        assert value(after, "dmg_gateway_shard_attempts_total", gateway=gw, outcome="succeeded") >= 1
        assert value(after, "dmg_gateway_dispatch_latency_seconds_count", gateway=gw) >= 1

        # When a node is stopped, its status gauge goes from Online to Offline.
        stopped = site.node_names[-1]
        site.stop_node(stopped)
        wait_for(lambda: value(scrape(site), "dmg_node_status", gateway=gw, node=stopped,
                               status="Offline") == 1, timeout=15, what=f"{stopped} Offline in /metrics")
        gone = scrape(site)
        assert value(gone, "dmg_node_status", gateway=gw, node=stopped, status="Online") == 0
        assert value(gone, "dmg_gateway_status", gateway=gw, status="Limited") == 1
        figure(site, "metrics_site_test_s", time.monotonic() - started)

    # Every line of every dmg process is JSON; the worker's say which node, shard and attempt.
    secrets = [site.settings.api_token] + [load_registration(site.data_dir, n).token for n in site.node_names]
    logs = {name: json_lines(site.log_path(name)) for name in ("cloud", *site.node_names)}
    assert all(logs.values()), {name: len(lines) for name, lines in logs.items()}
    every = [line for lines in logs.values() for line in lines]
    shard_lines = [line for line in every if line["message"].startswith("shard succeeded")]
    assert shard_lines
    assert all(set(line) >= {"node", "shard", "attempt", "activity_run"} for line in shard_lines)
    # Celery's own line per task is DEBUG only (workers.logsetup.TASK_LOGGERS): the shard's lines say it.
    celery_per_task = [line for line in every if line["logger"] in TASK_LOGGERS]
    assert celery_per_task == [], celery_per_task[:3]
    assert any(line["logger"].startswith("dispatcher") and line.get("node") for line in every)
    assert any(line["logger"].startswith("uvicorn") for line in logs["cloud"])
    for name in logs:
        text = site.log_path(name).read_text(errors="replace")
        assert not any(secret in text for secret in secrets), f"a token in {name}'s log"
