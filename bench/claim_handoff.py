"""Benchmark: a run's creation to its claim's answer at a waiting dispatcher, the cloud alone.

    .venv/bin/python bench/claim_handoff.py [--runs 200]

A real cloud server (``python -m dmg.cloud serve``, SQLite in a temp dir) with one gateway,
one node, two stores and a one-activity pipeline; no site. A thread plays the dispatcher's
claimer: it long-polls ``POST /dispatch/claim`` again as soon as an answer came (what
``dispatcher.loop`` does). Each round, once that long-poll waits, the main thread creates a
run (``POST /pipelines/{name}/runs``) and waits for the long-poll to answer with it. It
prints the medians of: the run's ``created_at`` -> the claim's answer received (the cloud's
part of the submit -> start path: the hop "claim" of ``bench/activities.py`` and the claim's
answer on its way), the POST's own round trip, and the cloud process's CPU per round
(psutil, over all measured rounds; it includes the long-poll's own claim as it comes
back). Fewer processes than ``bench/activities.py``, so less noise: run it from two trees
(``PYTHONPATH=<tree>``) alternately to compare them.
"""

from __future__ import annotations

import argparse
import operator
import os
import statistics
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import psutil

sys.path.insert(0, os.getcwd())

from dmg.cloud.client import CloudClient
from dmg.cloud.server import start_cloud_subprocess
from settings import Settings

WARM = 20
#: Long enough for the long-poll to be back waiting after its last answer.
SETTLE = 0.03


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="claim-handoff-"))
    settings = Settings(data_dir=work, log_level="WARNING")
    cloud = start_cloud_subprocess(settings, bind="127.0.0.1:0")
    try:
        with CloudClient(cloud.url, token=cloud.api_token) as user:
            keys = user.create_gateway("g")
            token = user.register_node(key=keys["key1"], name="n1", version="1.0.0")["token"]
            for name in ("src", "dst"):
                user.add_store({"name": name, "type": "file", "location": str(work / name)})
            user.create_pipeline({"name": "p", "gateway": "g", "activities": [
                {"name": "a", "source": {"store": "src", "path": "f"},
                 "sink": {"store": "dst", "path": "f"}}]})
            figures = _rounds(cloud.url, token, user, runs=args.runs, pid=cloud.pid)
    finally:
        cloud.stop()
    print(f"{args.runs} runs, medians in ms; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("  ".join(f"{key} {statistics.median(values) * 1000:.2f}" for key, values in figures.items()))


def _rounds(url: str, token: str, user: CloudClient, *, runs: int, pid: int) -> dict[str, list[float]]:
    answers: dict[str, float] = {}  # activity run id -> when its claim's answer came
    arrived = threading.Condition()
    stop = threading.Event()

    def claimer() -> None:
        with CloudClient(url, token=token) as node:
            while not stop.is_set():
                got = node.claim_activity_runs(epoch=1, wait=2)
                now = time.time()
                with arrived:
                    for activity_run in got:
                        answers[activity_run["id"]] = now
                    arrived.notify_all()

    thread = threading.Thread(target=claimer, daemon=True)
    thread.start()
    cloud = psutil.Process(pid)
    figures: dict[str, list[float]] = {"created->answer": [], "POST run": [], "cloud cpu": []}
    cpu0 = 0.0
    try:
        for i in range(runs + WARM):
            time.sleep(SETTLE)
            if i == WARM:
                cpu0 = sum(cloud.cpu_times()[:2])
            sent = time.perf_counter()
            run = user.run_pipeline("p")
            posted = time.perf_counter() - sent
            activity_run_id = run["activity_runs"][0]["id"]
            with arrived:
                if not arrived.wait_for(partial(operator.contains, answers, activity_run_id), timeout=30):
                    raise RuntimeError("the claim's answer never came")
            if i >= WARM:
                figures["created->answer"].append(answers[activity_run_id] - run["created_at"])
                figures["POST run"].append(posted)
        # per round, the whole measured part (psutil's CPU times tick every 10 ms)
        figures["cloud cpu"].append((sum(cloud.cpu_times()[:2]) - cpu0) / runs)
    finally:
        stop.set()
    return figures


if __name__ == "__main__":
    main()
