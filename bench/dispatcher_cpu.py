"""Benchmark: the dispatcher's CPU and Redis round trips per activity, plan and placement.

    .venv/bin/python bench/dispatcher_cpu.py [--activities 400] [--batch 16] [--repeats 5]

A real ``redis-server`` (embedded, on a free 127.0.0.1 port), two nodes' heartbeats (4
slots each, a long queue allowed), a file store with one empty file per activity, and the
dispatcher's real parts in one thread: :func:`dispatcher.planner.plan_activity_run` of
each one-file activity run, then a :class:`dispatcher.placement.Placer` round with the
dispatcher's own Celery sender (:func:`dispatcher.loop.make_sender`) and its placement
outbox, as :class:`dispatcher.loop.DispatcherService` wires them (messages built in the
placement script when the tree has it). Activities are planned and placed ``--batch`` at a
time (a claim's worth), ``--activities`` in all; printed per activity: CPU ms of this
process (``time.process_time``: what the dispatcher itself spends, less sensitive to other
load than wall time), wall ms, and round trips to Redis (commands sent, a pipeline or a
script counting one). Run it from two trees to compare them (``PYTHONPATH`` = the tree).
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from dispatcher.loop import make_sender  # noqa: E402
from dispatcher.placement import Placer  # noqa: E402
from dispatcher.planner import plan_activity_run  # noqa: E402
from dispatcher.reports import PlacementOutbox  # noqa: E402
from dispatcher.slots import FreeSlots  # noqa: E402
from dmg.embedded.redis import EmbeddedRedis  # noqa: E402
from dmg.procs import free_port  # noqa: E402
from dmg.site.boundary import SiteRedis  # noqa: E402
from dmg.site.state import SiteState  # noqa: E402
from settings import Settings  # noqa: E402
from tests.dispatcher.memcloud import MemoryCloud  # noqa: E402
from tests.workers.support import file_store  # noqa: E402


class CountingConnection(redis.Connection):
    """Counts what it sends: one command, one pipeline or one script."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)


def placer_for(state: SiteState, sender: Any) -> Placer:
    kwargs: dict[str, Any] = {}
    if "messages" in inspect.signature(Placer).parameters:  # the tree places in one script
        from dispatcher.messages import ShardMessages

        kwargs["messages"] = ShardMessages.of(sender)
    return Placer(state=state, sender=sender, cloud=PlacementOutbox(state), holding=lambda: True,
                  max_queued=10_000, epoch=lambda: 1, **kwargs)


def one_repeat(root: Path, url: str, *, activities: int, batch: int, repeat: int) -> dict[str, float]:
    client = SiteRedis.from_url(url, connection_class=CountingConnection)
    sender = make_sender(Settings(redis_url=url, gateway="gw"))
    try:
        state = SiteState(client, "gw")
        client.flushdb()
        client.set(state.keys.epoch, 1)
        for node in ("a", "b"):
            state.publish_heartbeat(node, {"limit": 4}, ttl=3600)
        placer = placer_for(state, sender)
        slots = FreeSlots(state)
        source = file_store("src", root / "src").to_json()
        sink = file_store("dst", root / "dst").to_json()
        settings = Settings(shard_max_files=64)
        placer.place_pending()  # warm: scripts loaded, the Celery producer connected
        cpu, wall, trips = time.process_time(), time.perf_counter(), CountingConnection.sent
        for first in range(0, activities, batch):
            for i in range(first, min(first + batch, activities)):
                run = {"id": f"ar{repeat}-{i:05d}", "run_id": "r1", "name": f"a{i}",
                       "source": {"store": source, "path": f"f{i:05d}"},
                       "sink": {"store": sink, "path": f"o{i:05d}"}, "options": {}}
                plan_activity_run(run, state=state, cloud=MemoryCloud(), epoch=1, settings=settings,
                                  outbox=placer.cloud, slots=slots)  # type: ignore[arg-type]
            placer.place_pending()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        trips = CountingConnection.sent - trips
        assert not state.pending(), "every shard is placed"
        return {"cpu_ms": cpu * 1000 / activities, "wall_ms": wall * 1000 / activities,
                "round_trips": trips / activities}
    finally:
        sender.close()
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--activities", type=int, default=400)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"tree {ROOT}; load average {' '.join(f'{x:.2f}' for x in __import__('os').getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="dmg-bench-dcpu-") as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        (root / "dst").mkdir()
        for i in range(args.activities):
            (root / "src" / f"f{i:05d}").touch()
        server = EmbeddedRedis(root / "redis", free_port()).start()
        try:
            rows = [one_repeat(root, server.url, activities=args.activities, batch=args.batch, repeat=k)
                    for k in range(args.repeats)]
        finally:
            server.stop()
    print(f"per activity (plan + placement, median of {args.repeats}): "
          + ", ".join(f"{k} {statistics.median(r[k] for r in rows):.3f}" for k in rows[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
