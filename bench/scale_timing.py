"""Benchmark: how fast scaling takes effect — ``dmg scale`` and a new node.

    .venv/bin/python bench/scale_timing.py [--grow-to 6] [--new-nodes 3] [--json]

One embedded site (Redis, cloud, one node of one job, no Flower; up to 20 shards
queued per node) runs one activity of 40 one-file shards throttled to a crawl
(``bandwidth`` 256 KiB/s for the whole activity), so every slot stays busy and a
queue waits on node1. Times come from polling the site's Redis every 10 ms:

* **dmg scale, grow** ``k -> k+1`` for k = 1 .. grow-to - 1, each by running the
  real ``dmg scale node1 --concurrency K`` (a new Python process, as a user runs
  it): until the command returns, until the worker publishes the new limit
  (what placement uses), and until ``running`` = the new limit (a queued shard
  started in the new slot: the limit is in effect);
* **dmg scale, shrink** to 1: until the command returns and until the published
  limit is 1; running shards are never killed, so running falls to 1 only as
  shards end (not timed here: it depends on the shards);
* **a new node**: from the start of ``dmg node start`` (spawned by
  :meth:`dmg.embedded.faults.SiteUnderTest.add_node`, already registered) until its first
  heartbeat in Redis, and until its first shard runs there (moved from node1's
  queue by the dispatcher's rebalancing, :mod:`dispatcher.rebalance`).

At the end the throttle is lifted and the run completes (checked Succeeded).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import KIB, MIB, machine, wait_run, write_random_file  # noqa: I001

import redis

from dmg.embedded.faults import SiteUnderTest
from dmg.site.state import SiteState
from settings import load

DMG = Path(sys.executable).parent / "dmg"
POLL = 0.01


def until(condition: Callable[[], bool], *, since: float, timeout: float = 120) -> float:
    """Seconds from ``since`` (a monotonic time) until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic() - since
        time.sleep(POLL)
    raise TimeoutError("condition not met")


def dmg_scale(site: SiteUnderTest, node: str, limit: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMG_")}
    env.update({"DMG_DATA_DIR": str(site.data_dir), "DMG_CLOUD_URL": site.settings.cloud_url,
                "DMG_REDIS_URL": site.settings.redis_url, "DMG_API_TOKEN": site.settings.api_token})
    return subprocess.Popen([str(DMG), "scale", node, "--concurrency", str(limit)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def limit_of(state: SiteState, node: str) -> int:
    load = state.worker_load(node)
    return int(load["limit"]) if load else 0


def time_scale(site: SiteUnderTest, state: SiteState, limit: int, *, wait_running: bool) -> dict[str, float]:
    """Run ``dmg scale node1 --concurrency limit``; seconds until each mark (polled together)."""
    started = time.monotonic()
    proc = dmg_scale(site, "node1", limit)
    marks: dict[str, float] = {}
    wanted = {"command_s", "limit_published_s"} | ({"running_s"} if wait_running else set())
    deadline = started + 120
    while not wanted <= set(marks):
        now = time.monotonic()
        if now > deadline:
            proc.kill()
            raise TimeoutError(f"scaling to {limit}: only {marks} after 120 s")
        if "command_s" not in marks and proc.poll() is not None:
            marks["command_s"] = now - started
        if "limit_published_s" not in marks and limit_of(state, "node1") == limit:
            marks["limit_published_s"] = now - started
        if wait_running and "running_s" not in marks and len(state.running("node1")) == limit:
            marks["running_s"] = now - started
        time.sleep(POLL)
    _out, err = proc.communicate(timeout=10)
    if proc.returncode != 0:
        raise RuntimeError(f"dmg scale exited {proc.returncode}: {err.decode().strip()}")
    return {"limit": limit, **marks}


def time_new_node(site: SiteUnderTest, state: SiteState, name: str) -> dict[str, Any]:
    started = time.monotonic()
    site.add_node(name, wait=False)
    beat = until(lambda: name in state.heartbeats(), since=started)
    first = until(lambda: bool(state.running(name)), since=started)
    return {"node": name, "heartbeat_s": beat, "first_shard_s": first}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grow-to", type=int, default=6)
    parser.add_argument("--new-nodes", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    meta = {"machine": machine()}
    grows: list[dict[str, float]] = []
    nodes: list[dict[str, Any]] = []

    with tempfile.TemporaryDirectory(prefix="dmg-bench-timing-") as tmp:
        work = Path(tmp)
        source, sink = work / "source", work / "sink"
        for i in range(40):
            write_random_file(source / f"f{i:03d}.bin", 2 * MIB)
        sink.mkdir()
        settings = load({"DMG_DATA_DIR": str(work / "data"), "DMG_SHARD_MAX_FILES": "1",
                         "DMG_MAX_QUEUED_PER_NODE": "20"})
        print("starting a 1-node dmg site ...", file=sys.stderr)
        with SiteUnderTest(settings, nodes=1, flower=False, node_concurrency=1, startup_timeout=120) as site:
            client = redis.Redis.from_url(site.broker_url())
            state = SiteState(client, site.gateway)
            with site.client() as cloud:
                cloud.add_store({"name": "bsrc", "type": "file", "location": str(source)})
                cloud.add_store({"name": "bdst", "type": "file", "location": str(sink)})
                cloud.create_pipeline({"name": "crawl", "gateway": site.gateway, "activities": [
                    {"name": "all", "source": {"store": "bsrc", "path": ""},
                     "sink": {"store": "bdst", "path": ""}, "options": {"bandwidth": 256 * KIB}}]})
                run = cloud.run_pipeline("crawl")
                until(lambda: len(state.running("node1")) == 1 and len(state.queued("node1")) >= 10,
                      since=time.monotonic())
                for limit in range(2, args.grow_to + 1):
                    grows.append(time_scale(site, state, limit, wait_running=True))
                    print(f"  grow to {limit}: {grows[-1]}", file=sys.stderr)
                shrink = time_scale(site, state, 1, wait_running=False)
                print(f"  shrink to 1: {shrink}", file=sys.stderr)
                for k in range(2, args.new_nodes + 2):
                    nodes.append(time_new_node(site, state, f"node{k}"))
                    print(f"  {nodes[-1]}", file=sys.stderr)
                [activity_run] = cloud.run(run["id"])["activity_runs"]
                state.set_bandwidth(str(activity_run["id"]), 0)  # lift the throttle: finish
                done = wait_run(cloud, str(run["id"]), timeout=600, poll=0.5)
            client.close()
            if done["status"] != "Succeeded":
                raise RuntimeError(f"the run ended {done['status']}")

    if args.json:
        print(json.dumps({"meta": meta, "grow": grows, "shrink": shrink, "new_nodes": nodes}, indent=2))
        return 0
    print(f"scale timings, one machine ({meta['machine']['cpus']} CPUs, load before "
          f"{meta['machine']['load_avg']}), polled every {POLL * 1000:.0f} ms")
    print(f"{'dmg scale node1':<22}{'command returns s':>18}{'limit published s':>19}"
          f"{'running = limit s':>19}")
    for g in grows:
        print(f"{'grow to ' + str(int(g['limit'])):<22}{g['command_s']:>18.2f}{g['limit_published_s']:>19.2f}"
              f"{g['running_s']:>19.2f}")
    print(f"{'shrink to 1':<22}{shrink['command_s']:>18.2f}{shrink['limit_published_s']:>19.2f}"
          f"{'(as shards end)':>19}")
    med = statistics.median
    print(f"{'grow, median':<22}{med(g['command_s'] for g in grows):>18.2f}"
          f"{med(g['limit_published_s'] for g in grows):>19.2f}{med(g['running_s'] for g in grows):>19.2f}")
    print()
    print(f"{'new node':<22}{'first heartbeat s':>18}{'first shard s':>19}")
    for n in nodes:
        print(f"{n['node']:<22}{n['heartbeat_s']:>18.2f}{n['first_shard_s']:>19.2f}")
    print(f"{'median':<22}{med(n['heartbeat_s'] for n in nodes):>18.2f}"
          f"{med(n['first_shard_s'] for n in nodes):>19.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
