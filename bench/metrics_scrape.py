"""Benchmark: what one Prometheus scrape of the cloud's ``/metrics`` costs as the database grows.

    .venv/bin/python bench/metrics_scrape.py [--runs 1000 30000] [--shards 5] [--db URL]

For each ``--runs`` figure: a fresh cloud database (SQLite in a temporary dir, or the
empty PostgreSQL database ``--db``) with 3 gateways of 8 nodes, that many succeeded
activity runs of ``--shards`` shards each (one attempt each), inserted directly; then the
scrape's work (:class:`dmg.cloud.api.prometheus.CloudCollector`: every query of
:mod:`dmg.cloud.service.metrics_read`, and the text) is timed 5 times, in process, without
HTTP. Prints the fastest and the median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from dmg.cloud.api.prometheus import CloudCollector  # noqa: E402
from dmg.cloud.db import Database  # noqa: E402
from dmg.cloud.models import ActivityRun, Gateway, Pipeline, Run, Shard, ShardAttempt  # noqa: E402
from dmg.cloud.service import CloudService  # noqa: E402
from settings import Settings  # noqa: E402

GATEWAYS = 3
NODES = 8


def fill(service: CloudService, *, runs: int, shards: int) -> None:
    for g in range(GATEWAYS):
        keys = service.create_gateway(f"gw{g}")
        for n in range(NODES):
            service.register_node(key=keys["key1"], name=f"n{n}", version="1.0.0")
    now = time.time()
    attempts = []
    with service.db.write() as session:
        for gateway in session.query(Gateway).all():
            pipeline = Pipeline(name=f"p-{gateway.name}", gateway_id=gateway.id, activities=[],
                                created_at=now)
            session.add(pipeline)
            session.flush()
            for _ in range(runs // GATEWAYS):
                run = Run(id=uuid.uuid4().hex, pipeline_id=pipeline.id, gateway_id=gateway.id,
                          status="Succeeded", created_at=now)
                activity = ActivityRun(id=uuid.uuid4().hex, run_id=run.id, gateway_id=gateway.id, position=0,
                                       name="a", spec={}, status="Succeeded", queued_at=now,
                                       claimed_at=now + 0.3)
                session.add_all([run, activity])
                for index in range(shards):
                    shard_id = f"{activity.id}-{index:05d}"
                    session.add(Shard(id=shard_id, activity_run_id=activity.id, index=index,
                                      status="succeeded", node="n1", attempt=1, files=10, bytes=1000,
                                      queued_at=now))
                    attempts.append(ShardAttempt(activity_run_id=activity.id, shard_id=shard_id, attempt=1,
                                                 node="n1", status="succeeded", outcome="succeeded",
                                                 placed_at=now, started_at=now + 0.2))
    with service.db.write() as session:  # after the shards: their rows must exist first
        session.add_all(attempts)


def measure(runs: int, shards: int, db: str | None) -> str:
    data_dir = Path(tempfile.mkdtemp(prefix="dmg-bench-metrics-"))
    settings = Settings(data_dir=data_dir, max_nodes_per_gateway=NODES, cloud_db=db or "")
    database = Database(settings.cloud_db_url)
    database.migrate()
    service = CloudService(settings, database)
    fill(service, runs=runs, shards=shards)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CloudCollector(service.metrics))
    times = []
    for _ in range(5):
        started = time.perf_counter()
        body = generate_latest(registry)
        times.append(time.perf_counter() - started)
    database.dispose()
    return (f"{database.dialect}: {runs} activity runs, {runs * shards} shards and attempts: scrape "
            f"{min(times) * 1000:.0f} ms fastest, {statistics.median(times) * 1000:.0f} ms median, "
            f"{len(body)} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, 30000])
    parser.add_argument("--shards", type=int, default=5)
    parser.add_argument("--db", default=None, help="an empty PostgreSQL database URL (default: SQLite)")
    args = parser.parse_args()
    for runs in args.runs:
        print(measure(runs, args.shards, args.db), flush=True)


if __name__ == "__main__":
    main()
