"""Benchmark: the dispatcher's placement cost with many nodes and a long backlog.

    .venv/bin/python bench/placement_cost.py [--nodes 100] [--shards 10000] [--steady 2000] [--json]

A real ``redis-server`` (embedded, on a free 127.0.0.1 port) holds the site state
of ``--nodes`` simulated nodes (a heartbeat and a worker load each, as real nodes
write them) and ``--shards`` pending shards (specs as the planner writes them).
:class:`dispatcher.placement.Placer` places them with a :class:`NullSender` of
ours (``send_task`` does nothing: Celery's own publish cost is not ours to
measure here) and no cloud reports. Two phases:

* **burst**: every node idle with ``shards / nodes`` free slots; rounds run until
  the backlog is empty (the first placements of a large activity);
* **steady**: every node full, ``--shards`` still pending; one slot frees at a
  time (a running shard ends) and one placement round follows, ``--steady``
  times (a backlog draining: this is where a round's fixed cost — reading the
  node loads and the backlog — shows).

Also timed: :func:`dispatcher.placement.node_loads` alone, and a rebalance round
(:class:`dispatcher.rebalance.Rebalancer`) that moves queued shards to one idle node.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from dispatcher.placement import Placer, node_loads  # noqa: E402
from dmg.connectors import Entry, StoreSpec  # noqa: E402
from dmg.embedded.redis import EmbeddedRedis  # noqa: E402
from dmg.procs import free_port  # noqa: E402
from dmg.shards import ShardSpec  # noqa: E402
from dmg.shards.status import STATE_QUEUED  # noqa: E402
from dmg.site.state import SiteState  # noqa: E402


class NullSender:
    """A :class:`dispatcher.ports.TaskSender` that sends nothing (counts calls)."""

    def __init__(self) -> None:
        self.sent = 0

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        self.sent += 1


def node_name(i: int) -> str:
    return f"n{i:03d}"


def setup(state: SiteState, *, nodes: int, shards: int, limit: int) -> list[str]:
    """Heartbeats and worker loads of ``nodes`` nodes; ``shards`` saved and pending."""
    pipe = state.redis.pipeline(transaction=False)
    for i in range(nodes):
        name = node_name(i)
        beat = {"node": name, "limit": limit, "draining": False, "stores_unreachable": []}
        pipe.set(state.keys.heartbeat(name), json.dumps(beat), px=3_600_000)
        pipe.sadd(state.keys.nodes, name)
        pipe.set(state.keys.load(name), json.dumps({"running": 0, "limit": limit, "pids": [], "ts": 0}),
                 px=3_600_000)
    pipe.execute()
    ids = [f"run1-{i:05d}" for i in range(shards)]
    for start in range(0, shards, 1000):
        pipe = state.redis.pipeline(transaction=False)
        for shard_id in ids[start:start + 1000]:
            spec = ShardSpec(shard_id=shard_id, activity_run_id="run1", index=int(shard_id[5:]),
                             source_store=StoreSpec("src", "file", "/src"), source_path="",
                             sink_store=StoreSpec("dst", "file", "/dst"), sink_path="",
                             entries=(Entry(f"f{shard_id}", 1024, 0.0),), options={})
            key = state.keys.shard(shard_id)
            pipe.hset(key, mapping={"spec": json.dumps(spec.to_json()), "attempt": 0, "state": STATE_QUEUED})
        pipe.execute()
    state.push_pending(*ids)
    return ids


def fresh(client: redis.Redis, gateway: str) -> SiteState:
    client.flushdb()
    return SiteState(client, gateway)


def bench_burst(client: redis.Redis, *, nodes: int, shards: int) -> dict[str, float]:
    state = fresh(client, "burst")
    setup(state, nodes=nodes, shards=shards, limit=-(-shards // nodes))
    sender = NullSender()
    placer = Placer(state=state, sender=sender, cloud=None, holding=lambda: True, max_queued=0)
    rounds = 0
    started = time.perf_counter()
    while state.redis.llen(state.keys.pending):
        placer.place_pending()
        rounds += 1
    elapsed = time.perf_counter() - started
    assert sender.sent == shards, (sender.sent, shards)
    return {"placements": shards, "seconds": elapsed, "per_s": shards / elapsed, "rounds": rounds}


def bench_steady(client: redis.Redis, *, nodes: int, shards: int, steps: int) -> dict[str, float]:
    state = fresh(client, "steady")
    limit = 4
    setup(state, nodes=nodes, shards=shards, limit=limit)
    pipe = state.redis.pipeline(transaction=False)
    for i in range(nodes):  # every slot busy with a shard of another run
        pipe.sadd(state.keys.running(node_name(i)), *[f"busy-{i}-{k}" for k in range(limit)])
    pipe.execute()
    sender = NullSender()
    placer = Placer(state=state, sender=sender, cloud=None, holding=lambda: True, max_queued=0)
    assert placer.place_pending() == []
    samples = []
    for step in range(steps):
        i = step % nodes
        node = node_name(i)
        # The shard in that slot ends (a busy one, or one placed earlier in this run).
        ended = state.redis.spop(state.keys.running(node)) or state.redis.spop(state.keys.queued(node))
        assert ended is not None
        started = time.perf_counter()
        placed = placer.place_pending()
        samples.append(time.perf_counter() - started)
        assert len(placed) == 1 and placed[0].node == node, placed
    total = sum(samples)
    return {"placements": steps, "seconds": total, "per_s": steps / total,
            "round_ms_p50": statistics.median(samples) * 1000,
            "round_ms_max": max(samples) * 1000, "pending_left": shards - steps}


def bench_node_loads(client: redis.Redis, *, nodes: int, repeat: int = 200) -> dict[str, float]:
    state = fresh(client, "loads")
    setup(state, nodes=nodes, shards=0, limit=4)
    started = time.perf_counter()
    for _ in range(repeat):
        assert len(node_loads(state)) == nodes
    elapsed = time.perf_counter() - started
    return {"calls": repeat, "ms_per_call": elapsed / repeat * 1000}


def bench_rebalance(client: redis.Redis, *, nodes: int, shards: int) -> dict[str, float]:
    """``nodes - 1`` full nodes with the backlog queued on them; one idle node with free slots."""
    from dispatcher.rebalance import Rebalancer

    state = fresh(client, "rebalance")
    limit = 4
    setup(state, nodes=nodes, shards=shards, limit=limit)
    busy = [node_name(i) for i in range(nodes - 1)]
    pipe = state.redis.pipeline(transaction=False)
    for i, node in enumerate(busy):
        pipe.sadd(state.keys.running(node), *[f"busy-{i}-{k}" for k in range(limit)])
    pipe.execute()
    idle = node_name(nodes - 1)
    # Take the idle node out while the backlog is placed on the others (a deep queue each).
    state.redis.delete(state.keys.heartbeat(idle))
    Placer(state=state, sender=NullSender(), cloud=None, holding=lambda: True,
           max_queued=-(-shards // len(busy))).place_pending()
    state.redis.set(state.keys.heartbeat(idle), json.dumps({"node": idle, "limit": limit}), px=3_600_000)
    placer = Placer(state=state, sender=NullSender(), cloud=None, holding=lambda: True, max_queued=0)
    rebalancer = Rebalancer(placer, interval=0)
    started = time.perf_counter()
    moves = rebalancer.rebalance_now()
    elapsed = time.perf_counter() - started
    assert len(moves) == limit, moves
    idle_round = time.perf_counter()
    assert rebalancer.rebalance_now() == []  # nothing free any more: a round that moves nothing
    idle_ms = (time.perf_counter() - idle_round) * 1000
    return {"moves": len(moves), "ms": elapsed * 1000, "idle_round_ms": idle_ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--shards", type=int, default=10_000)
    parser.add_argument("--steady", type=int, default=2_000, help="placements in the steady phase")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dmg-bench-place-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", free_port()).start()
        client = redis.Redis.from_url(server.url)
        try:
            results = {
                "node_loads": bench_node_loads(client, nodes=args.nodes),
                "burst": bench_burst(client, nodes=args.nodes, shards=args.shards),
                "steady": bench_steady(client, nodes=args.nodes, shards=args.shards, steps=args.steady),
                "rebalance": bench_rebalance(client, nodes=args.nodes, shards=args.shards),
            }
        finally:
            client.close()
            server.stop()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    burst, steady = results["burst"], results["steady"]
    print(f"placement cost: {args.nodes} simulated nodes, {args.shards} pending shards, real Redis, "
          "no-op task sender")
    print(f"{'phase':<10}{'placements':>12}{'seconds':>10}{'placements/s':>14}{'round ms p50':>14}"
          f"{'round ms max':>14}")
    print(f"{'burst':<10}{burst['placements']:>12}{burst['seconds']:>10.2f}{burst['per_s']:>14.0f}"
          f"{'':>14}{'':>14}")
    print(f"{'steady':<10}{steady['placements']:>12}{steady['seconds']:>10.2f}{steady['per_s']:>14.0f}"
          f"{steady['round_ms_p50']:>14.2f}{steady['round_ms_max']:>14.2f}")
    print(f"node_loads({args.nodes} nodes): {results['node_loads']['ms_per_call']:.2f} ms per call")
    reb = results["rebalance"]
    print(f"rebalance round: {reb['moves']} moves in {reb['ms']:.1f} ms; a round with nothing to move "
          f"{reb['idle_round_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
