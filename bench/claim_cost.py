"""Benchmark: the cloud's claim of one queued activity run, in process, CPU and wall.

    .venv/bin/python bench/claim_cost.py [--runs 300] [--db URL]

A :class:`dmg.cloud.service.CloudService` on a fresh SQLite file (or ``--db``, an empty
PostgreSQL database) with one gateway, one node, two ``file`` stores and a one-activity
pipeline. Each round queues a run (``start_run``, what ``POST /pipelines/{name}/runs``
does) and claims it with the cancels the claim's answer carries (what ``POST
/dispatch/claim`` does once woken). It prints the median CPU (this thread's) and wall
time of each, after 20 rounds of warm-up; in a tree with claim at creation
(:mod:`dmg.cloud.api.handoff`) also ``start_run`` claiming its run for a waiting long-poll
in its own transaction (``start_run+claim``), against ``start_run`` then ``claim``. No
HTTP, no other process: the claim's own cost, which the submit -> start hops "claim" and
"list+plan" of ``bench/activities.py`` wait on. Run it from another checkout
(``PYTHONPATH=<tree>``) to compare revisions.
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.getcwd())

from dmg.cloud.db import Database
from dmg.cloud.schemas import PipelineCreate, StoreCreate
from dmg.cloud.service import CloudService
from dmg.version import __version__
from settings import Settings

WARM = 20


class _Waiting:
    """A claim long-poll waiting in the cloud process (:mod:`dmg.cloud.api.handoff`)."""

    def __init__(self, node: Any) -> None:
        self.node, self.epoch, self.limit = node, 1, 16
        self.answer: dict[str, Any] | None = None

    def hand(self, answer: dict[str, Any] | None) -> None:
        self.answer = answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--db", default="", metavar="URL",
                        help="an empty database (default: SQLite in a temp dir)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="claim-cost-"))
    settings = Settings(data_dir=work, log_level="WARNING")
    db = Database(args.db or settings.cloud_db_url)
    db.migrate()
    svc = CloudService(settings, db)
    svc.create_gateway("g")
    token = svc.register_node(key=svc.gateway_keys("g")["key1"], name="n1", version=__version__)["token"]
    node = svc.authenticate_node(token)
    for name in ("src", "dst"):
        svc.add_store(StoreCreate.model_validate({"name": name, "type": "file",
                                                  "location": str(work / name)}))
    svc.create_pipeline(PipelineCreate.model_validate({"name": "p", "gateway": "g", "activities": [
        {"name": "a", "source": {"store": "src", "path": "f"}, "sink": {"store": "dst", "path": "f"}}]}))
    # An older tree has no claim_with_cancels: its route claimed, then read the cancels.
    with_cancels = getattr(svc, "claim_with_cancels", None)
    figures: dict[str, list[float]] = {"start_run cpu": [], "start_run wall": [],
                                       "claim cpu": [], "claim wall": []}
    # A tree with claim at creation: start_run claiming for a waiting long-poll, measured too.
    at_creation = "claim_for" in inspect.signature(svc.start_run).parameters
    if at_creation:
        figures.update({"start_run+claim cpu": [], "start_run+claim wall": []})
    for i in range(args.runs + WARM):
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        svc.start_run("p")
        wall1, cpu1 = time.perf_counter(), time.thread_time()
        if with_cancels is not None:
            claimed = with_cancels(node, epoch=1, limit=16)[0]
        else:
            claimed = svc.claim(node, epoch=1, limit=16)
            svc.cancelled_activity_runs(node)
        wall2, cpu2 = time.perf_counter(), time.thread_time()
        assert len(claimed) == 1, claimed
        if i >= WARM:
            for key, value in (("start_run cpu", cpu1 - cpu0), ("start_run wall", wall1 - wall0),
                               ("claim cpu", cpu2 - cpu1), ("claim wall", wall2 - wall1)):
                figures[key].append(value)
        if at_creation:
            waiting = _Waiting(node)
            wall0, cpu0 = time.perf_counter(), time.thread_time()
            svc.start_run("p", claim_for=lambda _gateway, waiting=waiting: [waiting])
            wall1, cpu1 = time.perf_counter(), time.thread_time()
            assert waiting.answer is not None and len(waiting.answer["activity_runs"]) == 1, waiting.answer
            if i >= WARM:
                figures["start_run+claim cpu"].append(cpu1 - cpu0)
                figures["start_run+claim wall"].append(wall1 - wall0)
    db.dispose()
    print(f"{db.dialect}, {args.runs} runs, medians in ms; load average {os.getloadavg()[0]:.1f}")
    print("  ".join(f"{key} {statistics.median(values) * 1000:.2f}" for key, values in figures.items()))


if __name__ == "__main__":
    main()
