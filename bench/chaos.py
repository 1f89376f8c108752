"""Chaos: a 3-node embedded site copies a few hundred activities while its nodes are
SIGKILLed and restarted, its dispatcher's node is killed, and Redis restarts; then every
file and row of the sinks is checked against the sources.

    .venv/bin/python bench/chaos.py                  # the full run (about 5 minutes, 2 cores)
    .venv/bin/python bench/chaos.py --short          # the CI-sized run (about 70 s)
    .venv/bin/python bench/chaos.py --seed 7 --kills 30 --json
    .venv/bin/python bench/chaos.py --pg postgresql://me@127.0.0.1:5432/scratch

What runs (see ``bench/chaos_data.py``): activities of four kinds -- file -> file
(folders of small files, some with a large one), CSV files -> SQL tables, JSON Lines
files -> SQL tables, SQL table (listed as key ranges) -> SQL table -- each throttled
with the activity option ``bandwidth`` so that kills land mid-copy. SQL stores are
SQLite files, or the PostgreSQL database given with ``--pg`` (tables made by the run
are dropped at the end; the URL must not hold a password).

What happens while they run (see ``bench/chaos_faults.py``): every few seconds a node
is SIGKILLed (every process of it at once) -- a random node holding work; the second
kill and every ``--dispatcher-every``-th one the node that holds the dispatcher lease
then -- and, once the site got over it, started again; after every ``--redis-every``
kills, Redis is stopped (SIGTERM) and started again on the same data dir, down for
the next of ``ChaosConfig.redis_down`` seconds (some short, one longer than the offline
threshold), ``--redis-restarts`` times at most (0: no limit); each stop waits up to
``free_slot_wait`` s for a node running shards with a free slot (its worker then waits
on Redis holding unacknowledged messages). The short run kills twice first, then
restarts Redis twice, so that every fault lands while the copy runs. The faults stop when
the runs end, after ``--kills`` kills (and the Redis restarts due) or ``--duration``
seconds.

At the end, ``--settle`` seconds after the last fault, every node process the run
started or restarted (each node's ``dmg node start`` and its Celery worker, by pid)
must still be alive: a node that died by itself after a fault fails the run.

The site uses quick thresholds (``--offline-after`` 3 s, ``--lease-ttl`` 2 s,
``--heartbeat`` 0.5 s; the defaults of a real site are 10 s, 6 s and 2 s), three nodes
of two jobs each, and at most 4 files per shard.

Printed at the end (``--json``: the same and every kill, as JSON): activities, files,
rows, bytes, kills, failovers, lost, duplicated and corrupted (``bench/chaos_verify.py``;
each must be 0), the time from each kill to every shard of the killed node running
again elsewhere (max, p50), and from each dispatcher kill to the new lease and to the
next placement, the Redis restarts, and the node processes alive at the end. Exit
status 0 only if every run Succeeded, nothing was lost, duplicated or corrupted, and
every node process is still alive.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.chaos_data import KIB, Plan, Workload, build, drop_tables  # noqa: E402
from bench.chaos_faults import Faults  # noqa: E402
from bench.chaos_verify import Verdict, verify  # noqa: E402
from dmg.cli.runview import shards_of  # noqa: E402
from dmg.cloud.client import CloudClient  # noqa: E402
from dmg.embedded.faults import SiteUnderTest  # noqa: E402
from dmg.errors import Retryable  # noqa: E402
from dmg.procs import free_port  # noqa: E402
from settings import Settings  # noqa: E402

ENDED = ("Succeeded", "Failed")


@dataclass(frozen=True)
class ChaosConfig:
    """Everything a chaos run depends on; :data:`FULL` and :data:`SHORT` are the two sizes."""

    activities: int = 240
    files_per_activity: int = 12
    large_files: int = 8
    large_mib: float = 8.0
    bandwidth: int = 64 * KIB  # bytes/s per small-file activity
    large_bandwidth: int = 1024 * KIB
    sql_bandwidth: int = 2 * KIB
    kills: int = 0  # 0: until the runs end
    duration: float = 0.0  # seconds of faults; 0: until the runs end
    dispatcher_every: int = 3  # every N-th kill (and always the 2nd) hits the dispatcher's node
    redis_every: int = 4  # a Redis restart after every N kills
    redis_restarts: int = 0  # at most this many Redis restarts; 0: no limit
    redis_from_kill: int = 0  # no Redis restart before this many kills
    redis_down: tuple[float, ...] = (1.0, 0.5, 6.0, 2.0)  # s Redis stays down, in turn
    free_slot_wait: float = 10.0  # s a Redis restart waits for a node running with a free slot
    settle: float = 60.0  # s after the last fault before checking every node process is alive
    interval: tuple[float, float] = (1.0, 3.0)  # pause between two faults, s
    seed: int = 1
    nodes: int = 3
    concurrency: int = 2
    offline_after: float = 3.0
    lease_ttl: float = 2.0
    heartbeat: float = 0.5
    shard_max_files: int = 4
    pg_url: str = ""
    timeout: float = 900.0  # for the runs to end

    def plan(self) -> Plan:
        return Plan(self.activities, self.files_per_activity, self.large_files, self.large_mib,
                    self.bandwidth, self.large_bandwidth, self.sql_bandwidth, seed=self.seed)


FULL = ChaosConfig()
SHORT = replace(FULL, activities=36, files_per_activity=8, large_files=2, large_mib=2.0,
                bandwidth=24 * KIB, large_bandwidth=160 * KIB, sql_bandwidth=1 * KIB, kills=2,
                dispatcher_every=2, redis_every=1, redis_restarts=2, redis_from_kill=2,
                redis_down=(1.0, 5.0), free_slot_wait=5.0, interval=(0.5, 1.0), settle=15.0,
                timeout=240.0)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def site_settings(config: ChaosConfig, data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir, redis_url=f"redis://127.0.0.1:{free_port()}/0",
        cloud_bind=f"127.0.0.1:{free_port()}", heartbeat_interval=config.heartbeat,
        offline_after=config.offline_after, lease_ttl=config.lease_ttl, claim_wait=1.0,
        shard_max_files=config.shard_max_files, log_level="INFO")


def runs_status(client: CloudClient, run_ids: list[str]) -> list[str]:
    try:
        return [str(client.run(run_id)["status"]) for run_id in run_ids]
    except Retryable:
        return ["unknown"] * len(run_ids)


def wait_until(probe: Callable[[], bool], *, timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(interval)
    return probe()


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C: the site is stopped on the way out."""
    def raise_exit(_signum: int, _frame: object) -> None:
        raise SystemExit(143)

    previous = signal.signal(signal.SIGTERM, raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_chaos(config: ChaosConfig, work: Path, *, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """One chaos run in ``work`` (an empty directory); returns the summary (see the module
    docstring). Every process it starts is stopped before it returns or raises."""
    started = time.monotonic()
    load_before = os.getloadavg()
    rng = random.Random(config.seed)
    prefix = f"x{secrets.token_hex(3)}_" if config.pg_url else ""
    echo(f"generating data in {work}")
    workload = build(work / "data", config.plan(), pg_url=config.pg_url, prefix=prefix)
    site = SiteUnderTest(site_settings(config, work / "site"), nodes=config.nodes,
                         node_concurrency=config.concurrency, flower=False, startup_timeout=120)
    faults: Faults | None = None
    try:
        echo(f"starting a site of {config.nodes} nodes x {config.concurrency} jobs")
        site.start()
        faults = Faults(site, rng=rng, echo=echo)
        with site.client() as client:
            for store in workload.stores:
                client.add_store(store)
            for pipeline in workload.pipelines:
                client.create_pipeline({**pipeline, "gateway": site.gateway})
            copy_started = time.monotonic()
            run_ids = [str(client.run_pipeline(p["name"])["id"]) for p in workload.pipelines]
            echo(f"{len(run_ids)} pipeline run(s) of {config.activities} activities submitted")
            wait_until(lambda: any(faults.work_of(n) for n in site.node_names), timeout=60, interval=0.05)
            _inject(config, faults, rng, lambda: all(s in ENDED for s in runs_status(client, run_ids)))
            if not wait_until(lambda: all(s in ENDED for s in runs_status(client, run_ids)),
                              timeout=config.timeout, interval=0.5):
                echo(f"the runs did not end within {config.timeout:.0f} s")
            copy_s = time.monotonic() - copy_started
            cleaned = wait_until(lambda: not any(faults.state.started(n) for n in site.node_names),
                                 timeout=60)
            runs = [client.run(run_id) for run_id in run_ids]
            settled = faults.last_fault + config.settle - time.monotonic()
            if settled > 0:
                echo(f"checking the node processes {config.settle:.0f} s after the last fault")
                time.sleep(settled)  # the check is "still alive this long after", not a wait for it
            dead = faults.dead_processes()
        verdict = verify(workload)
    finally:
        processes = site.started_processes()
        if faults is not None:
            faults.close()
        site.stop()
        if config.pg_url:
            drop_tables(workload)
    summary = summarise(config, workload, runs, faults, verdict, copy_s=copy_s, cleaned=cleaned, dead=dead,
                        elapsed=time.monotonic() - started, load=(load_before, os.getloadavg()))
    # Every process the run started (cloud, Redis, nodes, their workers) is gone after the stop.
    summary["survivors"] = survivors(processes)
    summary["ok"] = summary["ok"] and not summary["survivors"]
    return summary


def survivors(processes: list[tuple[int, float]]) -> list[str]:
    """``pid command`` of each of ``processes`` (pid, start time) still running as itself."""
    alive = []
    for pid, created in processes:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{pid} {' '.join(proc.cmdline()[:4])}")
    return alive


def is_dispatcher_kill(index: int, every: int) -> bool:
    """Whether kill ``index`` (from 0) targets the dispatcher's node: the second kill, and
    every ``every``-th."""
    return index == 1 or (every > 0 and index % every == every - 1)


def _inject(config: ChaosConfig, faults: Faults, rng: random.Random, ended: Callable[[], bool]) -> None:
    began = time.monotonic()
    kills = 0
    restarts = 0

    def redis_due() -> bool:
        if config.redis_restarts and restarts >= config.redis_restarts:
            return False
        return (config.redis_every > 0 and kills >= (restarts + 1) * config.redis_every
                and kills >= config.redis_from_kill)

    while True:
        if config.kills and kills >= config.kills and not redis_due():
            return
        time.sleep(rng.uniform(*config.interval))  # the schedule of faults, not a wait
        if ended() or (config.duration and time.monotonic() - began > config.duration):
            return
        if redis_due():
            faults.restart_redis(down_for=config.redis_down[restarts % len(config.redis_down)],
                                 free_slot_wait=config.free_slot_wait)
            restarts += 1
            continue
        faults.kill_and_restart(faults.pick(dispatcher=is_dispatcher_kill(kills, config.dispatcher_every)))
        kills += 1


def summarise(config: ChaosConfig, workload: Workload, runs: list[dict[str, Any]], faults: Faults | None,
              verdict: Verdict, *, copy_s: float, cleaned: bool, dead: list[str], elapsed: float,
              load: tuple[tuple[float, ...], tuple[float, ...]]) -> dict[str, Any]:
    assert faults is not None
    activity_runs = [a for run in runs for a in run.get("activity_runs", [])]
    shards = [s for run in runs for s in shards_of(run)]
    kills = faults.kills
    with_work = [k.elsewhere_s for k in kills if k.shards and k.elsewhere_s is not None]
    replaced = [k.replaced_s for k in kills if k.shards and k.replaced_s is not None]
    dispatcher = [k for k in kills if k.dispatcher]
    leases = [k.new_lease_s for k in dispatcher if k.new_lease_s is not None]
    placements = [k.placement_s for k in dispatcher if k.placement_s is not None]
    succeeded = sum(1 for a in activity_runs if a.get("status") == "Succeeded")
    ok = (verdict.clean and cleaned and len(runs) == len(workload.pipelines)
          and all(r.get("status") == "Succeeded" for r in runs) and succeeded == config.activities
          and not dead)
    return {
        "ok": ok,
        "config": {k: v for k, v in asdict(config).items() if k != "pg_url"} | {"sql": (
            "postgresql" if config.pg_url else "sqlite")},
        "activities": config.activities,
        "activity_kinds": workload.kinds,
        "activities_succeeded": succeeded,
        "runs": [str(r.get("status")) for r in runs],
        "files": verdict.files,
        "rows": verdict.rows,
        "bytes": verdict.bytes,
        "shards": len(shards),
        "shards_reattempted": sum(1 for s in shards if int(s.get("attempt") or 1) > 1),
        "kills": len(kills),
        "dispatcher_kills": len(dispatcher),
        "failovers": sum(1 for k in dispatcher if k.successor),
        "redis_restarts": len(faults.redis_restarts),
        "redis_restarts_with_free_slot": sum(1 for r in faults.redis_restarts if r.free_slot_node),
        "node_processes": faults.process_count(),
        "node_processes_alive": faults.process_count() - len(dead),
        "dead_processes": dead,
        "nodes_all_alive": not dead,
        "lost": verdict.lost,
        "duplicated": verdict.duplicated,
        "corrupted": verdict.corrupted,
        "staging_leftovers": verdict.staging_leftovers,
        "staging_cleaned": cleaned,
        "problems": verdict.examples,
        "kill_to_placed_elsewhere_s": {"max": max(replaced, default=None), "p50": percentile(replaced, 50),
                                       "n": len(replaced)},
        "kill_to_running_elsewhere_s": {"max": max(with_work, default=None), "p50": percentile(with_work, 50),
                                        "n": len(with_work), "timed_out": sum(
                                            1 for k in kills if k.shards and k.elsewhere_s is None)},
        "dispatcher_kill_to_new_lease_s": {"max": max(leases, default=None), "p50": percentile(leases, 50),
                                           "n": len(leases)},
        "dispatcher_kill_to_next_placement_s": {"max": max(placements, default=None),
                                                "p50": percentile(placements, 50), "n": len(placements)},
        "redis": [r.to_json() for r in faults.redis_restarts],
        "kill_log": [k.to_json() for k in kills],
        "copy_s": round(copy_s, 1),
        "elapsed_s": round(elapsed, 1),
        "load_before": [round(x, 2) for x in load[0]],
        "load_after": [round(x, 2) for x in load[1]],
        "cores": os.cpu_count(),
    }


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def render(summary: dict[str, Any]) -> str:
    c = summary["config"]
    kinds = ", ".join(f"{k} {v}" for k, v in summary["activity_kinds"].items())
    elsewhere = summary["kill_to_running_elsewhere_s"]
    replaced = summary["kill_to_placed_elsewhere_s"]
    lease = summary["dispatcher_kill_to_new_lease_s"]
    placed = summary["dispatcher_kill_to_next_placement_s"]
    downs = ", ".join(f"{r['down_s']:.1f}" for r in summary["redis"])
    online = [r["online_s"] for r in summary["redis"]]
    slowest = None if None in online else max(online, default=None)
    lines = [
        f"chaos: {c['nodes']} nodes x {c['concurrency']} jobs, seed {c['seed']}, SQL on {c['sql']}, "
        f"offline after {c['offline_after']:g} s, lease {c['lease_ttl']:g} s, heartbeat {c['heartbeat']:g} s",
        f"activities        {summary['activities']} ({kinds}): {summary['activities_succeeded']} Succeeded; "
        f"runs {', '.join(summary['runs'])}",
        f"files             {summary['files']}",
        f"rows              {summary['rows']}",
        f"bytes             {summary['bytes']} ({summary['bytes'] / 2**20:.1f} MiB)",
        f"shards            {summary['shards']}, "
        f"{summary['shards_reattempted']} ran again under a new attempt",
        f"kills             {summary['kills']} (SIGKILL of every process of a node), "
        f"{summary['dispatcher_kills']} of the dispatcher's node",
        f"failovers         {summary['failovers']} (another node took the dispatcher lease)",
        f"redis restarts    {summary['redis_restarts']}" + (
            f" (down {downs} s; {summary['redis_restarts_with_free_slot']} while a node ran shards with "
            f"a free slot; every node ready max {_s(slowest)} after it was back, "
            f"timed out {online.count(None)})" if online else ""),
        f"lost              {summary['lost']}",
        f"duplicated        {summary['duplicated']}",
        f"corrupted         {summary['corrupted']}",
        f"node processes    {summary['node_processes_alive']} of {summary['node_processes']} alive "
        f"{summary['config']['settle']:g} s after the last fault (each node's dmg node start and worker)",
        f"kill -> every shard of the killed node running elsewhere: max {_s(elsewhere['max'])}, "
        f"p50 {_s(elsewhere['p50'])} (n={elsewhere['n']}, timed out {elsewhere['timed_out']}); "
        f"placed elsewhere: max {_s(replaced['max'])}, p50 {_s(replaced['p50'])}",
        f"dispatcher kill -> new lease: max {_s(lease['max'])}, p50 {_s(lease['p50'])} (n={lease['n']}); "
        f"-> next placement: max {_s(placed['max'])}, p50 {_s(placed['p50'])} (n={placed['n']})",
        f"copy {summary['copy_s']:.0f} s, whole run {summary['elapsed_s']:.0f} s; {summary['cores']} cores, "
        f"load average before {summary['load_before'][0]:.2f}, after {summary['load_after'][0]:.2f}",
    ]
    if summary["staging_leftovers"] or not summary["staging_cleaned"]:
        lines.append(f"staging leftovers {summary['staging_leftovers']}, "
                     f"cleaned by the nodes: {summary['staging_cleaned']}")
    lines.extend(f"  problem: {p}" for p in summary["problems"])
    lines.extend(f"  dead: {d}" for d in summary["dead_processes"])
    if summary.get("survivors"):
        lines.append(f"processes left running after the stop: {'; '.join(summary['survivors'])}")
    lines.append("RESULT: " + ("ok" if summary["ok"] else "FAILED"))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> tuple[ChaosConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="the CI-sized run")
    parser.add_argument("--activities", type=int)
    parser.add_argument("--files-per-activity", type=int)
    parser.add_argument("--large-files", type=int)
    parser.add_argument("--large-mib", type=float)
    parser.add_argument("--bandwidth", type=int, help="bytes/s of each small-file activity")
    parser.add_argument("--kills", type=int,
                        help="stop killing after this many kills (0: until the runs end)")
    parser.add_argument("--duration", type=float, help="stop the faults after this many seconds")
    parser.add_argument("--dispatcher-every", type=int,
                        help="every N-th kill (and always the 2nd) hits the dispatcher's node")
    parser.add_argument("--redis-every", type=int, help="restart Redis after every N kills (0: never)")
    parser.add_argument("--redis-restarts", type=int, help="at most this many Redis restarts (0: no limit)")
    parser.add_argument("--settle", type=float,
                        help="seconds after the last fault before checking every node process is alive")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--offline-after", type=float)
    parser.add_argument("--lease-ttl", type=float)
    parser.add_argument("--heartbeat", type=float)
    parser.add_argument("--pg", dest="pg_url", help="PostgreSQL URL (no password) for the SQL stores")
    parser.add_argument("--tmp", type=Path, help="work in this directory (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, data) at the end")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    config = SHORT if args.short else FULL
    changes = {k: v for k, v in vars(args).items()
               if v is not None and k in ChaosConfig.__dataclass_fields__}
    return replace(config, **changes), args


def main(argv: list[str] | None = None) -> int:
    config, args = parse_args(argv)
    echo: Callable[[str], None] = (lambda line: print(line, file=sys.stderr)) if args.json else print
    base = args.tmp.absolute() if args.tmp else Path(tempfile.mkdtemp(prefix="dmg-chaos-"))
    work = base / f"chaos-{int(time.time())}" if args.tmp else base
    work.mkdir(parents=True, exist_ok=True)
    with terminate_as_exit():
        try:
            summary = run_chaos(config, work, echo=echo)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    if not summary["ok"] and not args.keep:
        echo("re-run with --keep to look at the logs (site/logs) and data")
    print(json.dumps(summary, indent=2) if args.json else render(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
