"""Failover times with the DEFAULT settings: how long a dead node or dispatcher costs.

    .venv/bin/python bench/failover.py                 # 3 repetitions of each fault (about 4 minutes)
    .venv/bin/python bench/failover.py --repeat 5 --json

A 3-node embedded site (two jobs per node) with the settings a real site runs: a
heartbeat every 2 s, offline after 10 s, a 6 s lease, 64 files per shard. Each
repetition submits a run that copies a folder of ``--files`` small files, throttled so
it keeps every slot busy, waits until every node runs shards, injects one fault
(``bench/chaos_faults.py``), measures, cancels the run, starts the node again and waits
until it is ready:

- ``worker kill``: SIGKILL of every process of a node that is not the dispatcher's;
  kill -> every shard it held placed, and running, on other nodes;
- ``dispatcher kill``: SIGKILL of every process of the dispatcher's node; kill -> another
  node holds the lease, -> the new dispatcher's first placement, -> the dead node's
  shards running elsewhere;
- ``worker stop``: SIGSTOP of every process of a node that is not the dispatcher's (a
  machine gone silent: its connections stay open, only its heartbeat stops); stop ->
  its shards running elsewhere (then it is SIGKILLed and started again).

Prints p50 and max of each figure and the load average before and after. "Running
elsewhere" includes the wait for a free slot on a surviving node: with every slot busy
a moved shard starts when a survivor's shard ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.chaos_faults import Faults, KillRecord  # noqa: E402
from dmg.cli.demo import KIB, generate_tree  # noqa: E402
from dmg.embedded.faults import SiteUnderTest  # noqa: E402
from dmg.errors import Conflict  # noqa: E402
from dmg.procs import free_port  # noqa: E402
from settings import Settings  # noqa: E402

FIGURES: dict[str, tuple[str, Callable[[KillRecord], float | None]]] = {
    "worker kill -> its shards given new attempts": ("kill", lambda r: r.requeued_s),
    "worker kill -> placed elsewhere": ("kill", lambda r: r.replaced_s),
    "worker kill -> running elsewhere": ("kill", lambda r: r.elsewhere_s),
    "dispatcher kill -> new lease": ("dispatcher", lambda r: r.new_lease_s),
    "dispatcher kill -> next placement": ("dispatcher", lambda r: r.placement_s),
    "dispatcher kill -> its shards running elsewhere": ("dispatcher", lambda r: r.elsewhere_s),
    "worker stop -> its shards given new attempts": ("stop", lambda r: r.requeued_s),
    "worker stop -> placed elsewhere": ("stop", lambda r: r.replaced_s),
    "worker stop -> running elsewhere": ("stop", lambda r: r.elsewhere_s),
}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each fault")
    parser.add_argument("--files", type=int, default=10000, help="files (1-4 KiB) in the copied folder")
    parser.add_argument("--bandwidth", type=int, default=1024 * KIB,
                        help="bytes/s of the copy activity (shards of ~1 s keep slots turning over)")
    parser.add_argument("--concurrency", type=int, default=2, help="jobs per node")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print every record as JSON too")
    return parser.parse_args()


def busy(faults: Faults, site: SiteUnderTest, activity_runs: list[str]) -> bool:
    """Every node runs a shard of this run (shard ids start with their activity run's id)."""
    return all(any(s.startswith(tuple(activity_runs)) for s in faults.work_of(n) & faults.state.running(n))
               for n in site.node_names)


def wait(probe: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def one_fault(site: SiteUnderTest, faults: Faults, kind: str) -> KillRecord:
    """Submit a run, wait until every node runs shards, inject ``kind``, cancel the run."""
    with site.client() as client:
        run = client.run_pipeline("failover")
        run_id, activity_runs = str(run["id"]), [str(a["id"]) for a in run["activity_runs"]]
        try:
            wait(lambda: busy(faults, site, activity_runs), timeout=60, what="every node running shards")
            leader = faults.dispatcher()
            if kind == "dispatcher":
                victim = leader
            else:
                victim = faults.rng.choice([n for n in site.node_names if n != leader])
            return faults.kill_and_restart(victim, pause=kind == "stop")
        finally:
            with contextlib.suppress(Conflict):  # it ended meanwhile
                client.cancel_run(run_id)


def summary(records: list[tuple[str, KillRecord]]) -> list[str]:
    lines = []
    for label, (kind, read) in FIGURES.items():
        values = [v for k, r in records if k == kind for v in [read(r)] if v is not None]
        missing = sum(1 for k, r in records if k == kind and read(r) is None)
        if not values:
            lines.append(f"{label:48s} n=0")
            continue
        lines.append(f"{label:48s} p50 {statistics.median(values):5.2f} s  max {max(values):5.2f} s  "
                     f"(n={len(values)}{f', timed out {missing}' if missing else ''}; "
                     + ", ".join(f"{v:.2f}" for v in values) + ")")
    return lines


def main() -> int:
    args = arguments()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="dmg-failover-") as tmp:
        root = Path(tmp)
        # The defaults of a real site, on free ports.
        settings = Settings(data_dir=root / "site", redis_url=f"redis://127.0.0.1:{free_port()}/0",
                            cloud_bind=f"127.0.0.1:{free_port()}", flower_port=free_port())
        print(f"failover: 3 nodes x {args.concurrency} jobs, defaults: heartbeat "
              f"{settings.heartbeat_interval:g} s, offline after {settings.offline_after:g} s, lease "
              f"{settings.lease_ttl:g} s, {settings.shard_max_files} files per shard; {args.files} files "
              f"at {args.bandwidth // KIB} KiB/s", flush=True)
        source, sink = root / "source", root / "sink"
        generate_tree(source, small_files=args.files, large_files=0, small_size=(1 * KIB, 4 * KIB))
        sink.mkdir()
        records: list[tuple[str, KillRecord]] = []
        with SiteUnderTest(settings, nodes=3, node_concurrency=args.concurrency, flower=False,
                           startup_timeout=90) as site:
            with site.client() as client:
                client.add_store({"name": "failover-src", "type": "file", "location": str(source)})
                client.add_store({"name": "failover-dst", "type": "file", "location": str(sink)})
                client.create_pipeline({"name": "failover", "gateway": site.gateway, "activities": [
                    {"name": "folder", "source": {"store": "failover-src", "path": ""},
                     "sink": {"store": "failover-dst", "path": ""},
                     "options": {"bandwidth": args.bandwidth}}]})
            faults = Faults(site, rng=random.Random(args.seed), echo=lambda line: print(line, flush=True))
            try:
                for _ in range(args.repeat):
                    for kind in ("kill", "dispatcher", "stop"):
                        records.append((kind, one_fault(site, faults, kind)))
            finally:
                faults.close()
    print()
    for line in summary(records):
        print(line)
    print(f"{os.cpu_count()} cores, load average before {load_before:.2f}, after {os.getloadavg()[0]:.2f}")
    if args.json:
        print(json.dumps([{"fault": k, **r.to_json()} for k, r in records], indent=1))
    timed_out = any(r.elsewhere_s is None for _k, r in records)
    return 1 if timed_out else 0


if __name__ == "__main__":
    sys.exit(main())
