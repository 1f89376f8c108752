"""A run that cannot be planned fails alone; a cancelled run stops and leaves nothing staged.

Given a real two-node site (Redis, the cloud, two `dmg node start`):

- when four runs are submitted at once, one whose source folder is gone and one whose
  source store was saved (before definitions were checked) with options nested 300
  levels deep, those two fail with their reason and the other two succeed;
- when a bandwidth-limited copy of large files is cancelled with `dmg runs cancel`
  while its shards run and others wait, the run ends Cancelled, no shard goes on,
  no `.dmg-staging` file stays in the sink, every node process is still alive and
  Online well after, and a new run succeeds.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, update

from dmg.cli.demo import KIB
from dmg.cli.runview import shards_of
from dmg.cloud.client import CloudClient
from dmg.cloud.models import Store
from dmg.embedded.faults import SiteUnderTest
from tests.cli.conftest import DmgRunner
from tests.ha.sitekit import all_nodes, ha_settings, online, require_redis, wait_for
from workers.run.attempt import CANCELLED_ERROR

pytestmark = pytest.mark.integration

MIB = 1024 * KIB


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteUnderTest]:
    require_redis()
    root = tmp_path_factory.mktemp("cancel")
    running = SiteUnderTest(ha_settings(root / "site", shard_max_files=1, cloud_metrics=True), nodes=2,
                            node_concurrency=1, flower=False, startup_timeout=60)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def folder_pipeline(client: CloudClient, site: SiteUnderTest, name: str, source: Path, sink: Path, *,
                    options: dict[str, Any] | None = None) -> None:
    sink.mkdir(parents=True, exist_ok=True)
    client.add_store({"name": f"{name}-src", "type": "file", "location": str(source)})
    client.add_store({"name": f"{name}-dst", "type": "file", "location": str(sink)})
    client.create_pipeline({"name": name, "gateway": site.gateway, "activities": [{
        "name": "folder", "source": {"store": f"{name}-src", "path": ""},
        "sink": {"store": f"{name}-dst", "path": ""}, "options": options or {}}]})


def write_files(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"f{i}.bin").write_bytes(os.urandom(size))


def ended(client: CloudClient, run_id: str) -> dict[str, Any] | None:
    run = client.run(run_id)
    return run if run["status"] in ("Succeeded", "Failed", "Cancelled") else None


def staged(sink: Path) -> list[Path]:
    return sorted(sink.rglob(".dmg-staging*"))


def cancel_requests(client: CloudClient) -> int:
    """How many ``GET /dispatch/cancelled`` the cloud has answered (its debug counters)."""
    return int(client.request("GET", "/debug/metrics")["requests_by_route"].get("GET /dispatch/cancelled", 0))


def nodes_alive(site: SiteUnderTest) -> bool:
    return all(site.node_pids(name) for name in site.node_names) and not site.dead_children()


def test_runs_that_cannot_be_planned_fail_alone(site: SiteUnderTest, tmp_path: Path) -> None:
    with site.client() as client:
        for name in ("good1", "good2", "gone", "poison"):
            write_files(tmp_path / name / "in", 3, 4 * KIB)
            folder_pipeline(client, site, name, tmp_path / name / "in", tmp_path / name / "out")
        shutil.rmtree(tmp_path / "gone" / "in")
        deep: dict[str, Any] = {}
        for _ in range(300):
            deep = {"a": deep}
        engine = create_engine(site.settings.cloud_db_url)  # what an older dmg let in
        try:
            with engine.begin() as connection:
                connection.execute(update(Store).where(Store.name == "poison-src").values(options=deep))
        finally:
            engine.dispose()

        runs = {name: client.run_pipeline(name)["id"] for name in ("good1", "gone", "poison", "good2")}

        final = {name: wait_for(lambda r=run_id: ended(client, r), timeout=60, what=f"run {name} to end")
                 for name, run_id in runs.items()}
    assert final["good1"]["status"] == final["good2"]["status"] == "Succeeded", final
    assert final["gone"]["status"] == "Failed" and final["poison"]["status"] == "Failed", final
    gone_error = final["gone"]["activity_runs"][0]["error"]
    assert gone_error.startswith("cannot plan activity 'folder'") and "does not exist" in gone_error
    assert "nests deeper than" in final["poison"]["activity_runs"][0]["error"]
    for name in ("good1", "good2"):
        assert sorted(p.name for p in (tmp_path / name / "out").iterdir()) == ["f0.bin", "f1.bin", "f2.bin"]


def test_a_cancelled_copy_stops_and_leaves_no_staging_files(site: SiteUnderTest, tmp_path: Path) -> None:
    source, sink = tmp_path / "big", tmp_path / "big-out"
    write_files(source, 6, 8 * MIB)  # 6 shards, 2 slots: 2 run (~32 s each at 256 KiB/s), 4 wait
    dmg = DmgRunner(env={"DMG_DATA_DIR": str(site.data_dir), "DMG_CLOUD_URL": site.settings.cloud_url,
                         "DMG_API_TOKEN": site.settings.api_token}, cwd=tmp_path)
    with site.client() as client:
        folder_pipeline(client, site, "big", source, sink, options={"bandwidth": 512 * KIB})
        run_id = client.run_pipeline("big")["id"]
        wait_for(lambda: staged(sink) and "running" in {s["status"] for s in shards_of(client.run(run_id))},
                 timeout=30, what="shards copying into staging files")

        asked_before = cancel_requests(client)
        cancelled = dmg("runs", "cancel", run_id)
        assert cancelled.returncode == 0, cancelled.stderr
        began = time.monotonic()

        assert client.run(run_id)["status"] == "Cancelled"
        wait_for(lambda: not any(s["status"] in ("running", "placed") for s in shards_of(client.run(run_id))),
                 timeout=20, what="every shard of the cancelled run to stop")
        wait_for(lambda: not staged(sink), timeout=10, what="the staging files to be removed")
        print(f"FIGURE cancel_to_stopped_s {time.monotonic() - began:.2f}")
        # The cancel reached the dispatcher in its claim's answer: no request of its own.
        assert cancel_requests(client) == asked_before
        run = client.run(run_id)
        assert run["status"] == "Cancelled"
        shards = shards_of(run)
        assert len(shards) == 6 and not [s for s in shards if s["status"] == "succeeded"], shards
        assert all(s["error"] == CANCELLED_ERROR for s in shards if s["status"] == "failed"), shards
        assert list(sink.iterdir()) == []  # nothing committed, nothing staged

        # A new run goes through on the same nodes (in another sink) while the cancelled one stays still.
        write_files(tmp_path / "after", 3, 4 * KIB)
        folder_pipeline(client, site, "after", tmp_path / "after", tmp_path / "after-out")
        after = client.run_pipeline("after")["id"]
        assert wait_for(lambda: ended(client, after), timeout=60, what="a new run")["status"] == "Succeeded"
        # Well after the cancel (20 s, the new run's time included): nothing went on, nothing died.
        time.sleep(max(0.0, began + 20 - time.monotonic()))
        assert not staged(sink) and list(sink.iterdir()) == []
        assert client.run(run_id)["status"] == "Cancelled"
        moving = ("running", "placed", "succeeded")
        still = [s for s in shards_of(client.run(run_id)) if s["status"] in moving]
        assert still == [], still
        assert nodes_alive(site), site.dead_children()
        # The nodes are alive (above); Online needs a fresh heartbeat, late on a loaded machine
        # (10 s timed out at load 13 and 35 with every process alive).
        wait_for(lambda: all_nodes(client, site, online), timeout=30, what="every node Online")
    assert nodes_alive(site)
