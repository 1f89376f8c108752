"""Benchmark: what a node's processes spend per one-file activity, split by process.

    .venv/bin/python bench/node_cost.py [--count 400] [--nodes 2] [--profile DIR]

Runs ``count`` one-empty-file activities through an embedded site (as
``bench/activities.py``'s bulk run) and prints, per activity, the CPU of each kind of
node process (psutil): the Celery worker's main process (kombu receive and ack, the
prefork hand-off, task events), its pool children (the shard itself), the node agents
(``dmg node start``: heartbeats, load, the outbox sender; the lease holder's also runs
the dispatcher). Then ``--starts N`` single activities on the idle site give the start
hop (shard placed -> shard started, the cloud's timestamps). The site Redis's commands
per activity of the bulk run (``INFO commandstats``, every client: a script's inner
commands count, as in ``bench/activities.py``).

``--profile DIR``: py-spy (``pip install py-spy``) records every node's Celery worker and
its pool children (``--subprocesses``) during the bulk run, one ``--format raw`` file
(collapsed stacks) per node in DIR; the pids are printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from activities import (  # noqa: E402
    PIPELINE_SIZE,
    cpu_seconds,
    empty_files,
    hop_times,
    percentile,
    redis_commands,
    redis_per_activity,
    wait_run,
)

from dmg.embedded.site import EmbeddedSite  # noqa: E402
from settings import load  # noqa: E402


def node_processes(site: EmbeddedSite) -> dict[str, dict[str, list]]:
    """Per node: its agent (``dmg node start``), its Celery worker's main process, its pool."""
    import psutil

    found: dict[str, dict[str, list]] = {}
    for name in site.node_names:
        pid = site.pid_of(name)
        if not pid:
            continue
        agent = psutil.Process(pid)
        workers = [c for c in agent.children() if "celery" in " ".join(c.cmdline())]
        pool = [g for w in workers for g in w.children(recursive=True)]
        found[name] = {"agent": [agent], "worker": workers, "pool": pool}
    return found


def cpu_by_kind(processes: dict[str, dict[str, list]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for kinds in processes.values():
        for kind, procs in kinds.items():
            totals[kind] = totals.get(kind, 0.0) + sum(cpu_seconds(p) for p in procs)
    return totals


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="dmg-nodecost-") as tmp:
        work = Path(tmp)
        settings = load({"DMG_DATA_DIR": str(work / "data")})
        with EmbeddedSite(settings, nodes=args.nodes, flower=False,
                          node_concurrency=args.concurrency) as site:
            source, sink = empty_files(work, args.count)
            with site.client() as client:
                client.add_store({"name": "bsrc", "type": "file", "location": str(source)})
                client.add_store({"name": "bdst", "type": "file", "location": str(sink)})
                acts = [{"name": f"a{i}", "source": {"store": "bsrc", "path": f"f{i:05d}"},
                         "sink": {"store": "bdst", "path": f"out{i:05d}"}} for i in range(args.count)]
                chunks = [acts[i:i + PIPELINE_SIZE] for i in range(0, args.count, PIPELINE_SIZE)]
                for k, chunk in enumerate(chunks):
                    client.create_pipeline({"name": f"bulk{k}", "gateway": site.gateway, "activities": chunk})
                client.create_pipeline({"name": "one", "gateway": site.gateway, "activities": acts[:1]})
                time.sleep(1.0)  # the workers' pools are up
                procs = node_processes(site)
                for name, kinds in procs.items():
                    print(f"{name}: agent {[p.pid for p in kinds['agent']]} worker "
                          f"{[p.pid for p in kinds['worker']]} pool {[p.pid for p in kinds['pool']]}",
                          file=sys.stderr)
                spies = []
                if args.profile:
                    out = Path(args.profile)
                    out.mkdir(parents=True, exist_ok=True)
                    spy = str(Path(sys.executable).parent / "py-spy")
                    for name, kinds in procs.items():
                        for w in kinds["worker"]:
                            spies.append(subprocess.Popen(
                                [spy, "record", "--pid", str(w.pid), "--subprocesses", "--gil",
                                 "--rate", "250",
                                 "--format", "raw", "--output", str(out / f"{name}-raw.txt"),
                                 "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                    time.sleep(1.0)
                before = cpu_by_kind(procs)
                commands_before = redis_commands(site)
                started = time.perf_counter()
                run_ids = [client.run_pipeline(f"bulk{k}")["id"] for k in range(len(chunks))]
                finished = [wait_run(client, r, timeout=600) for r in run_ids]
                elapsed = time.perf_counter() - started
                time.sleep(2.0)
                after = cpu_by_kind(procs)
                commands = redis_per_activity(commands_before, redis_commands(site), args.count)
                for spy in spies:
                    spy.send_signal(2)
                for spy in spies:
                    spy.wait(timeout=60)
                assert all(r["status"] == "Succeeded" for r in finished), [r["status"] for r in finished]
                starts, latencies = [], []
                for _ in range(args.starts):
                    one = client.run_pipeline("one")
                    done = wait_run(client, one["id"], timeout=60)
                    starts.append(hop_times(done, client.run_attempts(one["id"]))["start"] * 1000)
                    shard = done["activity_runs"][0]["shards"][0]
                    latencies.append((shard["started_at"] - done["created_at"]) * 1000)
    per = {k: (after[k] - before[k]) * 1000 / args.count for k in after}
    return {"rate": args.count / elapsed, "cpu_ms": per, "start_ms": percentile(starts, 50),
            "p50_ms": percentile(latencies, 50), "redis": commands}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--starts", type=int, default=30)
    parser.add_argument("--profile", default="", metavar="DIR")
    args = parser.parse_args()
    load_before = os.getloadavg()
    result = run(args)
    cpu = result["cpu_ms"]
    print(f"{args.count} one-file activities, {args.nodes} nodes x {args.concurrency}; load average "
          f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"activities/s {result['rate']:.1f}; CPU ms per activity: "
          + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
          + f"; worker+pool {cpu.get('worker', 0) + cpu.get('pool', 0):.2f}")
    redis = result["redis"]
    print(f"redis commands per activity {redis['commands']:.1f} (a script's own commands counted): "
          + ", ".join(f"{k} {v}" for k, v in list(redis["busiest"].items())[:10]))
    print(f"idle: p50 submit->start {result['p50_ms']:.1f} ms, start hop (placed -> started) "
          f"{result['start_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
