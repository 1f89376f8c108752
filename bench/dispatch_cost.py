"""Benchmark: what one plan and one shard's start cost the dispatcher and the node.

    .venv/bin/python bench/dispatch_cost.py [--plans 300] [--starts 500]

A real ``redis-server`` (embedded, on a free 127.0.0.1 port), two nodes' heartbeats and
a file store in a temporary directory. Timed, median of each call:

* **plan, one file**: :func:`dispatcher.planner.plan_activity_run` of a one-file source
  (the planner's whole path: listing, cutting, recording, queuing);
* **plan, 40 shards**: the same for 80 files, 2 a shard;
* **first delivery**: :func:`workers.run.delivery.begin_delivery` of a freshly placed
  attempt (what a worker does before its shard counts as started).

With each, the Redis commands per call (``INFO commandstats``; commands a script runs
count too). Run it from two trees to compare them (``PYTHONPATH`` = the tree).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dispatcher.planner import plan_activity_run  # noqa: E402
from dmg.embedded.redis import EmbeddedRedis  # noqa: E402
from dmg.procs import free_port  # noqa: E402
from dmg.site.boundary import SiteRedis  # noqa: E402
from dmg.site.state import SiteState  # noqa: E402
from settings import Settings  # noqa: E402
from tests.dispatcher.memcloud import MemoryCloud  # noqa: E402
from tests.workers.support import file_store, write_files  # noqa: E402
from workers.run.delivery import begin_delivery  # noqa: E402

SETTINGS = Settings(shard_max_files=2, shard_max_bytes=1_000_000)


def commands(state: SiteState) -> int:
    return sum(int(v["calls"]) for v in state.redis.info("commandstats").values())


def timed(state: SiteState, count: int, call: Callable[[int], Any]) -> tuple[float, float]:
    """(median ms, Redis commands per call) of ``call(i)`` for i in range(count)."""
    times = []
    before = commands(state)
    for i in range(count):
        started = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - started)
    spent = commands(state) - before - 1  # the INFO of the first count
    return statistics.median(times) * 1000, spent / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plans", type=int, default=300)
    parser.add_argument("--starts", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dmg-bench-dispatch-") as tmp:
        root = Path(tmp)
        server = EmbeddedRedis(root / "redis", free_port()).start()
        client = SiteRedis.from_url(server.url)
        try:
            state = SiteState(client, "gw")
            for node in ("a", "b"):
                state.publish_heartbeat(node, {"limit": 4}, ttl=3600)
            write_files(root / "src" / "one", {"f": 10})
            write_files(root / "src" / "many", {f"f{i:03d}": 10 for i in range(80)})

            def plan(path: str) -> Callable[[int], Any]:
                def one(i: int) -> Any:
                    run = {"id": f"ar-{path.replace('/', '-')}-{i}", "run_id": "r1", "name": "bench",
                           "source": {"store": file_store("src", root / "src").to_json(), "path": path},
                           "sink": {"store": file_store("dst", root / "dst").to_json(), "path": "out"},
                           "options": {}}
                    return plan_activity_run(run, state=state, cloud=MemoryCloud(), epoch=1,
                                             settings=SETTINGS)
                return one

            def start(i: int) -> Any:
                shard = f"ar-start-{i}-00000"
                outcome = begin_delivery(state, shard, attempts[i], "a").outcome
                assert outcome == "started", outcome

            rows = [("plan, one file", *timed(state, args.plans, plan("one/f"))),
                    ("plan, 40 shards", *timed(state, max(1, args.plans // 5), plan("many")))]
            attempts = []
            for i in range(args.starts):
                state.save_shard(f"ar-start-{i}-00000", {})
                attempts.append(state.new_attempt(f"ar-start-{i}-00000", "a"))
            rows.append(("first delivery", *timed(state, args.starts, start)))
        finally:
            client.close()
            server.stop()
    print(f"{'':18}{'median ms':>10}{'redis cmds':>12}")
    for name, ms, cmds in rows:
        print(f"{name:18}{ms:>10.3f}{cmds:>12.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
