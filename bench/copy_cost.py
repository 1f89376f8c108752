"""Benchmark: the CPU a dmg site spends per small file copied file -> file, by process.

    .venv/bin/python bench/copy_cost.py [--count 10000 --kib 8] [--repeat 3] [--tmp /dev/shm]
        [--profile DIR] [--json]

One embedded site (as ``bench/copy_local.py``'s), ``--repeat`` copies of the same generated
folder (one pipeline run each, a fresh sink), and per run: the wall time (run_pipeline to
the cloud's Succeeded), its phases (``common.PHASES``), and the CPU (user + system, psutil)
of each kind of process, in microseconds per file: the cloud, the site Redis, the lease
holder's ``dmg node start`` (dispatcher and its node's agent), the other agents, the Celery
workers' main processes, their pool children. The load average is printed with each run:
other processes share the machine, so compare runs taken close together.

``--profile DIR``: py-spy (``.venv/bin/py-spy``) records, during the last run, the cloud, every pool
child and every ``dmg node start`` process (``--format raw``, collapsed stacks; one file
per process in DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from activities import lease_holder
from common import KIB, DmgCopier, dmg_site, make_small, remove_tree, settle, verify_tree

_run_summary = common.run_summary


def _summary_with_run(run: dict[str, Any]) -> dict[str, Any]:
    return {**_run_summary(run), "run": run}


common.run_summary = _summary_with_run  # DmgCopier.copy's summary keeps the run (its shards)

KINDS = ("cloud", "redis", "dispatcher", "agents", "workers", "pool")


def site_processes(site: Any) -> dict[str, list[Any]]:
    """The site's processes by kind (see the module docstring)."""
    import psutil

    leader = lease_holder(site)
    found: dict[str, list[Any]] = {kind: [] for kind in KINDS}
    for name in ("cloud", "redis"):
        pid = site.pid_of(name)
        if pid:
            found[name].append(psutil.Process(pid))
    for name in site.node_names:
        pid = site.pid_of(name)
        if not pid:
            continue
        agent = psutil.Process(pid)
        found["dispatcher" if name == leader else "agents"].append(agent)
        for worker in agent.children():
            if "celery" not in " ".join(worker.cmdline()):
                continue
            found["workers"].append(worker)
            found["pool"].extend(worker.children(recursive=True))
    return found


def cpu_of(processes: dict[str, list[Any]]) -> dict[str, float]:
    import psutil

    out: dict[str, float] = {}
    for kind, procs in processes.items():
        total = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        out[kind] = total
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--kib", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tmp", type=Path, default=None)
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dmg-bench-cost-", dir=args.tmp) as tmp:
        work = Path(tmp)
        dataset = make_small(work / "src", count=args.count, size=args.kib * KIB)
        with dmg_site(work / "dmg-data", nodes=args.nodes, concurrency=None) as site:
            copier = DmgCopier(site)
            source = copier.store("src", "file", str(dataset.root))
            for i in range(args.repeat):
                dest = work / f"out-{i}"
                dest.mkdir()
                sink = copier.store(f"dst-{i}", "file", str(dest))
                settle()
                processes = site_processes(site)
                spies: list[subprocess.Popen[bytes]] = []
                if args.profile is not None and i == args.repeat - 1:
                    spies = start_spies(processes, args.profile)
                load = os.getloadavg()[0]
                before = cpu_of(processes)
                seconds, summary = copier.copy(f"copy-{i}", source, sink)
                after = cpu_of(processes)
                print(shard_spans(summary), file=sys.stderr)
                for spy in spies:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                for spy in spies:
                    spy.wait(timeout=60)
                verify_tree(dataset, dest, byte_compare=False)
                remove_tree(dest)
                us = {k: (after[k] - before[k]) * 1e6 / args.count for k in KINDS}
                us["total"] = sum(us[k] for k in KINDS)
                runs.append({"seconds": seconds, "load": load, "us_per_file": us,
                             "phases": summary["phases"], "shards": summary["shards"]})
                print(format_run(i, runs[-1]), file=sys.stderr)
    if args.json:
        print(json.dumps(runs, indent=2))
    else:
        print(f"{args.count} x {args.kib} KiB, {args.nodes} nodes, medians of {len(runs)} runs "
              f"(load at the start of each: {[round(r['load'], 2) for r in runs]})")
        print(format_run("median", {
            "seconds": statistics.median(r["seconds"] for r in runs),
            "load": statistics.median(r["load"] for r in runs),
            "us_per_file": {k: statistics.median(r["us_per_file"][k] for r in runs)
                            for k in (*KINDS, "total")},
            "phases": {p: statistics.median(r["phases"][p] or 0.0 for r in runs)
                       for p in runs[0]["phases"]},
            "shards": runs[0]["shards"]}))
    return 0


def shard_spans(summary: dict[str, Any]) -> str:
    """Each shard's start and end (s after the first start), node and files, in start order."""
    run = summary["run"]
    shards = [s for a in run.get("activity_runs") or [] for s in a.get("shards") or []]
    starts = [float(s["started_at"]) for s in shards if s.get("started_at")]
    if not starts:
        return "  shards: none started"
    first = min(starts)
    rows = sorted(shards, key=lambda s: float(s.get("started_at") or 0))
    return "  shards (start-end s, node, files): " + ", ".join(
        f"{float(s['started_at']) - first:.3f}-{float(s['ended_at']) - first:.3f} "
        f"{s.get('node')} {s.get('files')}" for s in rows if s.get("started_at") and s.get("ended_at"))


def format_run(label: object, run: dict[str, Any]) -> str:
    us = run["us_per_file"]
    phases = run["phases"]
    return (f"run {label}: {run['seconds']:.3f} s load {run['load']:.2f} shards {run['shards']}; CPU us/file "
            + " ".join(f"{k} {us[k]:.1f}" for k in (*KINDS, "total"))
            + "; phases " + " ".join(f"{k} {v:.3f}" for k, v in phases.items() if v is not None))


def start_spies(processes: dict[str, list[Any]], out: Path) -> list[subprocess.Popen[bytes]]:
    """py-spy on every pool child, every ``dmg node start`` process and the cloud."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out.mkdir(parents=True, exist_ok=True)
    spies = []
    for kind in ("pool", "dispatcher", "agents", "cloud"):
        for proc in processes[kind]:
            spies.append(subprocess.Popen(
                [py_spy, "record", "--pid", str(proc.pid), "--rate", "500", "--format", "raw",
                 "--nonblocking", "--output", str(out / f"{kind}-{proc.pid}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1.0)  # py-spy attaches
    return spies


if __name__ == "__main__":
    raise SystemExit(main())
