"""The peer for bench/activities.py: plain Celery on the same Redis, no dmg.

A task that does nothing but say when it started, run by a stock prefork worker
with the same reliability settings dmg uses (acks late, prefetch 1).
"""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery("bench_noop", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
             backend=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_extended=True,
)


@app.task(name="bench.noop")
def noop(submitted: float) -> dict[str, float]:
    return {"submitted": submitted, "started": time.time()}
