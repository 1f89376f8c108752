"""Benchmark: a pool process's CPU per one-file shard, in one process, against a real Redis.

    .venv/bin/python bench/pool_cost.py [--shards 300] [--repeats 5]

What a node's pool process does per one-empty-file shard: Celery's tracer around
``dmg.copy_shard`` (the task's request, its signals, the result's text for its event),
the attempt's start script, the copy (file -> file), the commit's fencing check and the
end script with the task's result, dmg's log line at INFO through the worker's formatter
(to /dev/null), in this process's main thread, with none of the site around it: no other
process, so the figure moves far less with the machine's load than ``bench/node_cost.py``'s.
Not included: billiard's hand-off (the message in, the result out) and the main process.

Each repeat places ``--shards`` shards on a node (outside the measure), then runs them one
after another; the thread's CPU time per shard is printed per repeat, with the median. A
``redis-server`` on PATH is started on a free port in a temporary folder.

On a shared machine a thread's CPU time moves with the load (2 to 5 ms per shard for the
same code in one hour here); instructions do not. ``--callgrind`` under callgrind counts
only the measured shards' instructions (the setup, the warm-up and the imports are not
counted); Redis's own work is not counted either way::

    valgrind --tool=callgrind --instr-atstart=no .venv/bin/python bench/pool_cost.py \
        --shards 100 --repeats 1 --callgrind     # "Collected" / 100 = instructions per shard
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--callgrind", action="store_true",
                        help="under valgrind --tool=callgrind --instr-atstart=no: instrument only the "
                             "measured shards (callgrind_control -i on/off around them)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="dmg-poolcost-") as tmp:
        work = Path(tmp)
        port = free_port()
        redis_server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                                         "--appendonly", "no", "--dir", str(work)], stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            per_shard = run(work, f"redis://127.0.0.1:{port}/0", args.shards, args.repeats,
                            callgrind=args.callgrind)
        finally:
            redis_server.terminate()
            redis_server.wait()
    from redis.utils import HIREDIS_AVAILABLE

    print(f"{args.shards} one-file shards x {args.repeats}; hiredis {HIREDIS_AVAILABLE}; load average "
          f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print("CPU us per shard: " + " ".join(f"{v:.0f}" for v in per_shard)
          + f"; median {statistics.median(per_shard):.0f}")
    return 0


def instrument(on: bool) -> None:
    """Callgrind counts instructions from here (``on``) or stops counting."""
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], check=True,
                   stdout=subprocess.DEVNULL)


def run(work: Path, redis_url: str, shards: int, repeats: int, *, callgrind: bool = False) -> list[float]:
    os.environ.update({"DMG_REDIS_URL": redis_url, "DMG_GATEWAY": "gw", "DMG_DATA_DIR": str(work / "data"),
                       "DMG_NODE_NAME": "n1"})
    from celery.app.trace import build_tracer

    import workers.tasks as tasks
    from dmg.connectors.base import StoreSpec
    from dmg.connectors.file import FileConnector
    from dmg.shards import ShardSpec
    from dmg.site.connection import redis_client
    from dmg.site.state import SiteState
    from settings import load
    from workers.app import app
    from workers.logsetup import format_worker_logger, quiet_task_logs
    from workers.run.outbox import OutboxReporter, ReportOutbox
    from workers.run.reporter import MemoryReporter, ShortShardReporter

    settings = load()
    devnull = open(os.devnull, "w")  # noqa: SIM115 - for the whole run
    logging.basicConfig(level=logging.INFO, stream=devnull)
    quiet_task_logs("INFO")
    format_worker_logger(logging.getLogger())
    state = SiteState(redis_client(settings, timeout=5.0, retry_for=120.0, health_check_interval=30), "gw")
    outbox = ReportOutbox(state, "n1")
    reporter = ShortShardReporter(OutboxReporter(MemoryReporter(), outbox, queue_first=True))
    context = SimpleNamespace(node="n1", state=state, reporter=reporter)
    tasks.node_context = lambda _settings: context  # type: ignore[assignment]
    task = tasks.copy_shard
    tracer = build_tracer(task.name, task, app.loader, "n1@gw", app=app)
    source, sink = work / "source", work / "sink"
    source.mkdir()
    sink.mkdir()
    (source / "f").touch()
    source_store, sink_store = StoreSpec("src", "file", str(source)), StoreSpec("dst", "file", str(sink))
    entries = tuple(FileConnector(source_store).list("f"))
    results = []
    for repeat in range(repeats + 1):  # the first repeat warms up
        state.publish_heartbeat("n1", {"node": "n1", "limit": 4}, ttl=300)
        placed = []
        for i in range(shards):
            shard_id = f"ar{uuid.uuid4().hex[:12]}-{i:05d}"
            state.save_shard(shard_id, ShardSpec(
                shard_id=shard_id, activity_run_id=shard_id.rsplit("-", 1)[0], index=0,
                source_store=source_store, source_path="f", sink_store=sink_store, sink_path=f"o{repeat}-{i}",
                entries=entries, options={}).to_json())
            placed.append((shard_id, state.new_attempt(shard_id, "n1")))
        if repeat and callgrind:
            instrument(True)
        started = time.thread_time()
        for shard_id, attempt in placed:
            task_id = f"{shard_id}:{attempt}"
            request: dict[str, Any] = {
                "id": task_id, "task": task.name, "args": [shard_id, attempt], "kwargs": {"epoch": None},
                "hostname": "n1@gw", "is_eager": False, "correlation_id": task_id, "reply_to": None,
                "delivery_info": {"exchange": "", "routing_key": "node.n1", "priority": 0,
                                  "redelivered": False}}
            _r, info, _t, _text = tracer(task_id, [shard_id, attempt], {"epoch": None}, request)
            if info is not None:
                raise SystemExit(f"shard {shard_id} did not succeed: {info!r}")
        if repeat:
            results.append((time.thread_time() - started) * 1e6 / shards)
            if callgrind:
                instrument(False)
    devnull.close()
    return results


if __name__ == "__main__":
    raise SystemExit(main())
