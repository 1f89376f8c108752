"""Faults under a cloud of 2 worker processes on PostgreSQL, while a run moves.

Given an embedded site (real Redis, two nodes) whose cloud is ``--workers 2`` on a
PostgreSQL server of this module's own (so that it can be stopped):

- one cloud worker is SIGKILLed while a run moves: the cloud keeps serving (the other
  worker, then the one uvicorn's supervisor starts), the run ends Succeeded with every
  file copied exactly once, and uvicorn starts a worker in its place;
- then PostgreSQL is stopped for ~10 s while a second run moves: the cloud answers a
  clear 503 while it is down, nothing is lost, the run ends Succeeded once it is back,
  and the cloud's workers are still alive a minute after the restart.

Both faults are one test, so that one minute-long watch covers both.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from dmg.embedded.redis import redis_binary
from dmg.embedded.site import EmbeddedSite
from dmg.errors import Fatal
from dmg.procs import free_port
from tests.cloud.test_counters import counters_and_aggregates
from tests.conftest import require
from tests.e2e.conftest import Credentials, Gateway, assert_succeeded, site_settings
from tests.ha.nodekit import site_state
from tests.servers.postgres import BIN, PostgresServer, _run_as
from tests.waiting import wait_for
from workers.run.outbox import ReportOutbox

FILES = 120  # 60 shards of 2 files: the run is still moving when the fault comes
BANDWIDTH = 2048  # bytes/s for the whole run


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    require((BIN / "initdb").exists(), f"PostgreSQL 15 is not in {BIN} (apt-get install postgresql)")
    run_as = _run_as()
    require(run_as != "", "running as root needs a 'postgres' user to start PostgreSQL")
    root = Path(tempfile.mkdtemp(prefix="dmg-pg-faults-"))
    server = PostgresServer(root=root, port=free_port(), run_as=run_as or None)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def site(own_postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    try:
        redis_binary()
    except Fatal as exc:
        require(False, str(exc))
    root = tmp_path_factory.mktemp("e2e-worker-faults")
    db = own_postgres.create_database("faults")
    settings = site_settings(root / "site").replace(cloud_db=db, cloud_workers=2)
    embedded = EmbeddedSite(settings, nodes=2, flower=False, node_concurrency=2, startup_timeout=90)
    embedded.start()
    try:
        yield Gateway(embedded, Credentials(embedded.settings.credentials_path), {})
    finally:
        embedded.stop()


def _cloud_workers(gateway: Gateway) -> set[int]:
    cloud = psutil.Process(gateway.site.pid_of("cloud") or 0)
    return {p.pid for p in cloud.children() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
            and "spawn_main" in " ".join(p.cmdline())}


def _start_moving_run(gateway: Gateway, tmp_path: Path) -> tuple[str, Path, dict[str, bytes]]:
    """A run of FILES small files, returned once its first shard succeeded."""
    source, sink = tmp_path / "in", tmp_path / "out"
    source.mkdir(parents=True)
    sink.mkdir(parents=True)
    expected = {f"f{i:03d}.bin": os.urandom(64) + bytes([i % 256]) * i for i in range(FILES)}
    for name, data in expected.items():
        (source / name).write_bytes(data)
    stores = gateway.store("file", str(source)), gateway.store("file", str(sink))
    # Throttled (bytes/s for the whole run: ~7 s for these ~15 KB), so that the run is seen
    # moving: unthrottled, 60 two-file shards can all end between two polls of the cloud.
    pipeline = gateway.pipeline((stores[0], ""), (stores[1], "c"), {"bandwidth": BANDWIDTH})
    run_id = gateway.start(pipeline)

    def moving() -> bool:
        with gateway.site.client() as client:
            run = client.run(run_id)
        done = [s for a in run["activity_runs"] for s in a["shards"] if s["status"] == "succeeded"]
        return bool(done) and run["status"] == "InProgress"
    wait_for(moving, timeout=60, what="the run moving (a shard succeeded, the run not ended)", interval=0.05)
    return run_id, sink / "c", expected


def _assert_exactly_once(gateway: Gateway, run: dict[str, Any], sink: Path,
                         expected: dict[str, bytes]) -> None:
    assert_succeeded(run)
    copied = {p.name: p.read_bytes() for p in sink.rglob("*") if p.is_file()}
    assert copied == expected  # every file, once, byte for byte, nothing left beside them
    assert sum(a["files"] for a in run["activity_runs"]) == len(expected)
    kept, derived = counters_and_aggregates(gateway.site.settings.cloud_db_url, str(run["id"]))
    assert kept == derived


def _alive_until(gateway: Gateway, deadline: float, workers: set[int]) -> None:
    """Every site process and these cloud workers alive, checked every second until ``deadline``."""
    while True:
        assert gateway.site.dead_children() == []
        assert _cloud_workers(gateway) == workers
        if time.monotonic() >= deadline:
            return
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def test_a_killed_cloud_worker_then_a_postgresql_restart_lose_nothing(
        site: Gateway, own_postgres: PostgresServer, tmp_path: Path) -> None:
    """One test for both faults, one after the other, so that one minute-long watch covers
    both (the suite's time): the watch runs from the restart, over a minute after the kill."""
    # Given a run moving through a two-worker cloud
    before = _cloud_workers(site)
    assert len(before) == 2
    run_id, sink, expected = _start_moving_run(site, tmp_path / "kill")

    # When one worker is SIGKILLed
    victim = min(before)
    os.kill(victim, signal.SIGKILL)

    # Then the cloud keeps serving, the run succeeds with every file once
    run = site.finish(run_id, timeout=80)
    _assert_exactly_once(site, run, sink, expected)
    # And uvicorn's supervisor (0.55) started a worker in the dead one's place
    workers = wait_for(lambda: (w if len(w := _cloud_workers(site)) == 2 and victim not in w else None),
                       timeout=30, what="a new cloud worker")

    # Given a second run moving
    run_id, sink, expected = _start_moving_run(site, tmp_path / "restart")

    # When PostgreSQL stops for ~10 s
    own_postgres.stop()
    stopped_at = time.monotonic()
    url = f"{site.site.settings.cloud_url}/api/v1/runs/{run_id}"
    headers = {"Authorization": f"Bearer {site.site.settings.api_token}"}
    # Then the cloud answers a clear one-line 503 while it is down
    answer = wait_for(lambda: (r if (r := httpx.get(url, headers=headers, timeout=10)).status_code == 503
                               else None), timeout=10, what="a 503 while PostgreSQL is down")
    body = answer.json()
    assert body["error"] == "retryable" and "\n" not in body["message"] and "Traceback" not in answer.text

    def felt_by_the_nodes() -> bool:
        """Still a 503, and a node holds reports the cloud could not take (the run's
        shards end while PostgreSQL is down), for at least ~10 s of outage."""
        assert httpx.get(url, headers=headers, timeout=10).status_code == 503
        with site_state(site.site) as state:
            waiting = sum(ReportOutbox(state, node).size() + len(ReportOutbox(state, node).held())
                          for node in site.site.node_names)
        return waiting > 0 and time.monotonic() >= stopped_at + 10
    wait_for(felt_by_the_nodes, timeout=60, interval=0.5, what="the nodes holding reports in the outage")
    own_postgres.start_again()
    restarted_at = time.monotonic()

    # And once it is back the run succeeds with every file once
    run = site.finish(run_id, timeout=60)
    _assert_exactly_once(site, run, sink, expected)
    # And a minute after the restart (over a minute after the kill) the cloud's workers
    # (the replacement among them) and every process of the site are alive
    _alive_until(site, restarted_at + 60, workers)
