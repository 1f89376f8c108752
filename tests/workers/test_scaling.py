"""A running node's limit changes live: `dmg scale`, Flower's pool buttons, restarts.

Given a one-node site with a limit of 2, when `dmg scale` grows it to 4 the pool
has 4 processes and every view (node list, persisted limit) says 4; when it is
shrunk to 1 while 4 shards run, no shard is killed: the limit drops at once for
placement and the pool shrinks as they finish; Flower's pool-grow button is taken
as the new limit; a restarted node keeps the last limit; Flower's API and worker page
show the live limit (not the one the worker started with) and its grow/shrink buttons
and `dmg scale` agree in both directions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dmg.embedded.flower import flower_password
from dmg.embedded.site import EmbeddedSite
from dmg.procs import free_port
from dmg.registration import node_dir
from settings import Settings
from tests.cli.conftest import DmgRunner
from tests.waiting import wait_for
from workers.agent.scaling import persisted_limit

pytestmark = pytest.mark.integration

KIB = 1024


def site_settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir, redis_url=f"redis://127.0.0.1:{free_port()}/0",
        cloud_bind=f"127.0.0.1:{free_port()}", flower_port=free_port(), heartbeat_interval=0.5,
        offline_after=5.0, lease_ttl=3.0, claim_wait=2.0, shard_max_files=1, log_level="WARNING")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[EmbeddedSite]:
    running = EmbeddedSite(site_settings(tmp_path / "data"), nodes=1, node_concurrency=2,
                           startup_timeout=60)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def dmg_for(site: EmbeddedSite, cwd: Path) -> DmgRunner:
    return DmgRunner(env={"DMG_DATA_DIR": str(site.data_dir), "DMG_CLOUD_URL": site.settings.cloud_url,
                          "DMG_REDIS_URL": site.settings.redis_url,
                          "DMG_API_TOKEN": site.settings.api_token}, cwd=cwd)


def worker_load(site: EmbeddedSite) -> dict[str, Any]:
    import redis

    client = redis.Redis.from_url(site.broker_url())
    try:
        raw = client.get(f"dmg:{site.gateway}:load:node1")
    finally:
        client.close()
    return json.loads(raw) if raw else {}


def node_row(dmg: DmgRunner) -> dict[str, Any]:
    [row] = dmg.json("node", "list", "--gateway", "site")
    return row


def test_scale_grows_and_shrinks_without_killing_a_shard(site: EmbeddedSite, tmp_path: Path) -> None:
    dmg = dmg_for(site, tmp_path)
    assert wait_for(lambda: worker_load(site).get("limit") == 2, timeout=20, what="limit 2")

    grown = dmg("scale", "node1", "--concurrency", "4", "--json")
    assert grown.returncode == 0, grown.stderr
    [row] = json.loads(grown.stdout)
    assert row["before"] == 2 and row["limit"] == 4 and row["pool"] == 4
    wait_for(lambda: len(worker_load(site).get("pids", [])) == 4, timeout=20, what="4 pool processes")
    wait_for(lambda: node_row(dmg)["limit"] == 4, timeout=20, what="node list shows 4")
    assert persisted_limit(node_dir(site.data_dir, "node1")) == 4

    # Four one-file shards of 300 KiB at 100 KiB/s each: all four run for ~3 s.
    source, sink = tmp_path / "source", tmp_path / "sink"
    source.mkdir()
    sink.mkdir()
    for i in range(4):
        (source / f"f{i}").write_bytes(bytes([i]) * 300 * KIB)
    with site.client() as client:
        client.add_store({"name": "src", "type": "file", "location": str(source)})
        client.add_store({"name": "dst", "type": "file", "location": str(sink)})
        client.create_pipeline({"name": "slow", "gateway": site.gateway, "activities": [
            {"name": "a", "source": {"store": "src", "path": ""}, "sink": {"store": "dst", "path": ""},
             "options": {"bandwidth": 100 * KIB}}]})
        run = client.run_pipeline("slow")
        wait_for(lambda: worker_load(site).get("running") == 4, timeout=30, what="4 shards running")

        shrunk = dmg("scale", "node1", "--concurrency", "1", "--json")
        assert shrunk.returncode == 0, shrunk.stderr
        [row] = json.loads(shrunk.stdout)
        assert row["limit"] == 1 and row["pending_shrink"] >= 1  # every process was busy
        load = worker_load(site)
        assert load["running"] >= 1  # nothing was killed to shrink

        def ended() -> dict[str, Any] | None:
            body = client.run(run["id"])
            return body if body["status"] in ("Succeeded", "Failed") else None

        done = wait_for(ended, timeout=60, what="the run to end")
    assert done["status"] == "Succeeded", done
    shards = done["activity_runs"][0]["shards"]
    assert len(shards) == 4 and all(s["attempt"] == 1 for s in shards)  # none re-run
    for i in range(4):
        assert (sink / f"f{i}").read_bytes() == bytes([i]) * 300 * KIB
    wait_for(lambda: len(worker_load(site).get("pids", [])) == 1, timeout=30, what="pool shrunk to 1")
    assert persisted_limit(node_dir(site.data_dir, "node1")) == 1


def test_flower_pool_grow_becomes_the_limit_and_survives_a_restart(site: EmbeddedSite,
                                                                  tmp_path: Path) -> None:
    dmg = dmg_for(site, tmp_path)
    assert site.flower_url
    auth = (site.settings.flower_user, flower_password(site.settings))

    def flower_sees_the_worker() -> Any:
        workers = httpx.get(f"{site.flower_url}api/workers", params={"refresh": "1"}, auth=auth, timeout=15)
        return workers.json().get("node1@site")

    wait_for(flower_sees_the_worker, timeout=30, what="Flower to see the worker")
    response = httpx.post(f"{site.flower_url}api/worker/pool/grow/node1@site", params={"n": 1},
                          auth=auth, timeout=10)
    assert response.status_code == 200, response.text
    wait_for(lambda: worker_load(site).get("limit") == 3, timeout=20, what="limit 3 after Flower's grow")
    wait_for(lambda: node_row(dmg)["limit"] == 3, timeout=20, what="node list shows 3")
    assert persisted_limit(node_dir(site.data_dir, "node1")) == 3

    site.stop()
    restarted = EmbeddedSite(site.settings, nodes=1, startup_timeout=60)  # no --concurrency given
    restarted.start()
    try:
        wait_for(lambda: worker_load(restarted).get("limit") == 3, timeout=30, what="limit 3 after restart")
    finally:
        restarted.stop()


def test_flower_shows_the_live_limit_and_its_pool_buttons_agree_with_dmg_scale(site: EmbeddedSite,
                                                                              tmp_path: Path) -> None:
    """Given Flower started as `dmg up` starts it (basic auth), its API and worker page show
    the limit `dmg scale` set, and its grow/shrink buttons move the limit `dmg` shows."""
    dmg = dmg_for(site, tmp_path)
    auth = (site.settings.flower_user, flower_password(site.settings))

    def flower_stats() -> dict[str, Any]:
        workers = httpx.get(f"{site.flower_url}api/workers", params={"refresh": "1"}, auth=auth, timeout=15)
        assert workers.status_code == 200, workers.text
        return dict((workers.json().get("node1@site") or {}).get("stats") or {})

    def flower_pool() -> dict[str, Any]:
        return dict(flower_stats().get("pool") or {})

    def flower_says(limit: int) -> bool:
        pool = flower_pool()
        return pool.get("max-concurrency") == limit and len(pool.get("processes", [])) == limit

    def everyone_says(limit: int, what: str) -> None:
        wait_for(lambda: flower_says(limit), timeout=30, what=f"Flower to say {limit} ({what})")
        wait_for(lambda: worker_load(site).get("limit") == limit, timeout=20, what=f"load limit {limit}")
        wait_for(lambda: node_row(dmg)["limit"] == limit, timeout=20, what=f"node list {limit}")

    everyone_says(2, "at start")
    # The node's status, reasons and role as the cloud sees them are in Flower too (tab "Other").
    shown = {"dmg_status": "Online", "dmg_reasons": "", "dmg_role": "dispatcher"}
    wait_for(lambda: {k: flower_stats().get(k) for k in shown} == shown, timeout=20,
             what=f"Flower to show {shown}")
    other = httpx.get(f"{site.flower_url}worker/node1@site", auth=auth, timeout=15).text
    assert re.search(r"<td>dmg_status</td>\s*<td[^>]*>Online</td>", other), "no status on Flower's page"
    grown = dmg("scale", "node1", "--concurrency", "4", "--json")
    assert grown.returncode == 0, grown.stderr
    everyone_says(4, "after dmg scale 4")
    page = httpx.get(f"{site.flower_url}worker/node1@site", auth=auth, timeout=15)
    assert page.status_code == 200
    assert re.search(r"<td>Max concurrency</td>\s*<td>4</td>", page.text), "another limit on the page"

    for verb, limit in (("shrink", 3), ("grow", 4)):
        response = httpx.post(f"{site.flower_url}api/worker/pool/{verb}/node1@site", params={"n": 1},
                              auth=auth, timeout=10)
        assert response.status_code == 200, response.text
        everyone_says(limit, f"after Flower's {verb}")
        assert persisted_limit(node_dir(site.data_dir, "node1")) == limit

    shrunk = dmg("scale", "node1", "--concurrency", "1", "--json")
    assert shrunk.returncode == 0, shrunk.stderr
    everyone_says(1, "after dmg scale 1")
