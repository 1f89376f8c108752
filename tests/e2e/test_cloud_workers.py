"""A two-node site whose cloud runs 2 worker processes on PostgreSQL.

Given an embedded site (real Redis, two nodes) whose cloud is ``--workers 2`` on a
real PostgreSQL, a file→file copy runs end to end: nodes register, beat, claim,
plan, place and report through whichever worker takes each request, and the run
succeeds with every file copied byte for byte, and the run's counters equal the
aggregates (concurrent reports through two workers lost no count). After it, the cloud still has its
two workers (none died on the way).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from dmg.embedded.redis import redis_binary
from dmg.embedded.site import EmbeddedSite
from dmg.errors import Fatal
from tests.cloud.test_counters import counters_and_aggregates
from tests.conftest import require
from tests.e2e.conftest import NODES, Credentials, Gateway, assert_succeeded, site_settings
from tests.servers.postgres import PostgresServer


@pytest.fixture(scope="module")
def pg_gateway(postgres_server: PostgresServer,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    try:
        redis_binary()
    except Fatal as exc:
        require(False, str(exc))
    root = tmp_path_factory.mktemp("e2e-workers")
    db = postgres_server.create_database(f"e2e_workers_{int(time.time() * 1000)}")
    settings = site_settings(root / "site").replace(cloud_db=db, cloud_workers=2)
    site = EmbeddedSite(settings, nodes=len(NODES), flower=False, node_concurrency=2, startup_timeout=60)
    site.start()
    try:
        yield Gateway(site, Credentials(site.settings.credentials_path), {})
    finally:
        site.stop()


def test_a_two_node_copy_through_a_two_worker_cloud(pg_gateway: Gateway, tmp_path: Path) -> None:
    source, sink = tmp_path / "in", tmp_path / "out"
    (source / "sub").mkdir(parents=True)
    sink.mkdir()
    expected = {f"f{i}.bin": bytes([i]) * (1000 + i) for i in range(6)}
    expected["sub/deep.txt"] = b"deep"
    for name, data in expected.items():
        (source / name).write_bytes(data)
    src = pg_gateway.store("file", str(source))
    dst = pg_gateway.store("file", str(sink))
    run = pg_gateway.copy((src, ""), (dst, "copy"), timeout=120)
    shards = assert_succeeded(run)
    copied = {str(p.relative_to(sink / "copy")): p.read_bytes()
              for p in (sink / "copy").rglob("*") if p.is_file()}
    assert copied == expected
    assert len(shards) >= 2  # shard_max_files=2: the work was split
    kept, derived = counters_and_aggregates(pg_gateway.site.settings.cloud_db_url, str(run["id"]))
    assert kept == derived  # two workers' concurrent reports lost no count
    cloud = psutil.Process(pg_gateway.site.pid_of("cloud") or 0)
    workers = [p for p in cloud.children() if "spawn_main" in " ".join(p.cmdline())]
    assert len(workers) == 2, [p.cmdline() for p in cloud.children()]
    assert pg_gateway.site.dead_children() == []
