"""Benchmark: scale-out efficiency of one gateway on 1, 2, 4, 8 and 16 nodes (one machine).

    .venv/bin/python bench/scale_out.py [--nodes 1,2,4,8,16] [--shards-per-node 3]
        [--shard-mib 8] [--rate-mib 2] [--json]

The workload's per-shard speed is bounded, as a store that serves each connection
at a fixed rate would bound it: every shard copies one file of ``--shard-mib``
MiB at ``--rate-mib`` MiB/s. The ``bandwidth`` option holds for a whole activity
run (all its shards share it), so each file is an activity of its own: one
pipeline of ``shards-per-node x N`` one-file activities, each with
``bandwidth = rate``, i.e. one shard per activity run and a per-shard bound.

One embedded site (Redis, cloud, nodes of one job each, no Flower) runs all the
points: it starts with the first point's node count and grows with
:meth:`dmg.embedded.faults.SiteUnderTest.add_node` (not timed). The work grows with N
(weak scaling), so perfect scale-out keeps the time constant:

* ``seconds``: from ``run_pipeline`` to the cloud's ``ended_at`` of the run (it
  includes claiming, listing, planning and placing every activity);
* ``MiB/s`` (throughput_N): bytes copied / seconds;
* ``efficiency`` = throughput_N / (N x throughput_1);
* ``span eff.``: the same over the span from the first shard start to the last
  shard end (copying only, without the cloud round trips before the first start);
* ``nodes``: how many nodes ran shards. Every sink file is compared byte for byte.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MIB, check_free_space, machine, run_summary, wait_run, write_random_file

from dmg.embedded.faults import SiteUnderTest
from settings import load

AIM_AT_8 = 0.85


def grow(site: SiteUnderTest, nodes: int) -> None:
    """Add nodes until the site has ``nodes`` (started together, then waited for)."""
    names = [f"node{k}" for k in range(len(site.node_names) + 1, nodes + 1)]
    for name in names:
        site.add_node(name, wait=False)
    if names:
        site.wait_nodes_online(timeout=300)


def wait_idle(site: SiteUnderTest, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with site.client() as client:
        while time.monotonic() < deadline:
            rows = client.list_nodes(site.gateway)
            if all(int(r.get("running") or 0) == 0 for r in rows):
                return
            time.sleep(0.5)
    raise TimeoutError("nodes still busy")


def run_point(site: SiteUnderTest, source: Path, sink: Path, *, nodes: int, files: list[str],
              rate: int) -> dict[str, Any]:
    name = f"scale{nodes}"
    target = sink / name
    with site.client() as client:
        client.create_pipeline({"name": name, "gateway": site.gateway, "activities": [
            {"name": f"a{i:03d}", "source": {"store": "bsrc", "path": f},
             "sink": {"store": "bdst", "path": name}, "options": {"bandwidth": rate}}
            for i, f in enumerate(files)]})
        wait_idle(site)
        submitted = time.time()
        run_id = str(client.run_pipeline(name)["id"])
        run = wait_run(client, run_id, timeout=1800, poll=0.25)
    if run["status"] != "Succeeded":
        raise RuntimeError(f"run {run_id} {run['status']}")
    seconds = float(run["ended_at"]) - submitted
    for f in files:  # byte for byte
        if (target / f).read_bytes() != (source / f).read_bytes():
            raise AssertionError(f"{target / f} differs from the source")
    summary = run_summary(run)
    total = sum((source / f).stat().st_size for f in files)
    return {"nodes": nodes, "shards": summary["shards"], "bytes": total, "seconds": seconds,
            "span_seconds": summary["shard_span_seconds"], "nodes_used": len(summary["shards_per_node"]),
            "first_start": summary["created_to_first_shard_start"],
            "mib_per_s": total / MIB / seconds, "span_mib_per_s": total / MIB / summary["shard_span_seconds"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="1,2,4,8,16", help="comma list, ascending")
    parser.add_argument("--shards-per-node", type=int, default=3)
    parser.add_argument("--shard-mib", type=float, default=8)
    parser.add_argument("--rate-mib", type=float, default=2, help="MiB/s per shard")
    parser.add_argument("--tmp", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    counts = sorted({int(n) for n in args.nodes.split(",")})
    size, rate = int(args.shard_mib * MIB), int(args.rate_mib * MIB)
    most = counts[-1] * args.shards_per_node
    tmp_parent = args.tmp or Path(tempfile.gettempdir())
    check_free_space(tmp_parent, most * size * (1 + len(counts)))
    meta = {"machine": machine(), "shard_bytes": size, "rate_per_shard": rate,
            "shards_per_node": args.shards_per_node}
    points: list[dict[str, Any]] = []

    with tempfile.TemporaryDirectory(prefix="dmg-bench-scale-", dir=tmp_parent) as tmp:
        work = Path(tmp)
        source, sink = work / "source", work / "sink"
        files = [f"f{i:04d}.bin" for i in range(most)]
        for f in files:
            write_random_file(source / f, size)
        sink.mkdir()
        settings = load({"DMG_DATA_DIR": str(work / "data")})
        print(f"starting a {counts[0]}-node dmg site ...", file=sys.stderr)
        with SiteUnderTest(settings, nodes=counts[0], flower=False, node_concurrency=1,
                           startup_timeout=300) as site:
            with site.client() as client:
                client.add_store({"name": "bsrc", "type": "file", "location": str(source)})
                client.add_store({"name": "bdst", "type": "file", "location": str(sink)})
            for nodes in counts:
                grow(site, nodes)
                point = run_point(site, source, sink, nodes=nodes, files=files[:nodes * args.shards_per_node],
                                  rate=rate)
                points.append(point)
                print(f"  {nodes:>2} nodes: {point['seconds']:.2f} s, {point['mib_per_s']:.2f} MiB/s, "
                      f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)

    base = points[0]
    for point in points:
        scale = point["nodes"] / base["nodes"]
        point["efficiency"] = point["mib_per_s"] / (scale * base["mib_per_s"])
        point["span_efficiency"] = point["span_mib_per_s"] / (scale * base["span_mib_per_s"])
    if args.json:
        print(json.dumps({"meta": meta, "points": points}, indent=2))
        return 0
    print(f"scale-out, one machine ({meta['machine']['cpus']} CPUs, load before "
          f"{meta['machine']['load_avg']}): {args.shards_per_node} shards per node of "
          f"{args.shard_mib:g} MiB each at {args.rate_mib:g} MiB/s per shard (ideal "
          f"{args.shards_per_node * args.shard_mib / args.rate_mib:g} s per point)")
    print(f"{'nodes':>5}{'shards':>8}{'MiB':>8}{'seconds':>9}{'MiB/s':>9}{'efficiency':>12}"
          f"{'span s':>8}{'span eff.':>11}{'used':>6}")
    for p in points:
        print(f"{p['nodes']:>5}{p['shards']:>8}{p['bytes'] / MIB:>8.0f}{p['seconds']:>9.2f}"
              f"{p['mib_per_s']:>9.2f}{p['efficiency']:>12.3f}{p['span_seconds']:>8.2f}"
              f"{p['span_efficiency']:>11.3f}{p['nodes_used']:>6}")
    at8 = next((p for p in points if p["nodes"] == 8), None)
    if at8 is not None and base["nodes"] == 1:
        verdict = "met" if at8["efficiency"] >= AIM_AT_8 else "NOT met"
        print(f"aim: efficiency >= {AIM_AT_8} at 8 nodes: {at8['efficiency']:.3f} ({verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
