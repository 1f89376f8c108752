"""Benchmark: small activities through the whole gateway vs plain Celery round-trips.

    .venv/bin/python bench/activities.py [--count 1000] [--nodes 2] [--latency-samples 50]

Both sides run on the same machine, on the same embedded Redis, in the same run:

* **dmg**: an embedded site (Redis, cloud, N nodes). A pipeline of ``count``
  activities, each copying one empty file (so every activity goes the whole way:
  claim, list, plan, place, run on a node, report), is run once; the clock stops
  when the cloud says the run Succeeded, seen through the run's long-poll as
  ``dmg pipeline run --wait`` sees it (:func:`wait_run`).
* **celery**: ``count`` ``apply_async`` calls of a no-op task on N stock prefork
  workers with dmg's reliability settings (acks late, prefetch 1), waiting for
  every result.

Then submit-to-start latency on an idle system, one at a time: for dmg, from the
pipeline run's creation to the shard's start on a node, with its median per hop
(:data:`HOPS`: claim, list+plan, place, start); for Celery, from ``apply_async`` to
the task's start.

What the cloud costs per activity of the bulk run: HTTP requests (by route), SQL
statements and transactions (the cloud's counters, ``DMG_CLOUD_METRICS=1``,
``GET /api/v1/debug/metrics``, summed over its workers) and CPU seconds of the cloud's
processes (psutil: its supervisor and every worker). What the site's Redis costs per
activity of the bulk run: commands (``INFO commandstats`` before and after, every client of
the site's Redis: dispatcher, nodes, Celery), printed as ``redis cmds`` with the busiest
commands, the ``redis-server`` process's own CPU (psutil, all its threads), printed as
``redis CPU ms``, and the reads it processed (``INFO stats``: about one per client round trip).

``--profile DIR``: py-spy records the site's processes during the bulk run (raw collapsed
stacks in ``DIR/repeat-N``) and a profile summary is printed: for each role (cloud,
dispatcher, node agent, Celery worker main, Celery pool) its CPU samples by area (SQLAlchemy,
kombu, ``dmg/cloud`` ...) and its busiest functions (:mod:`profile_summary`). Sampling costs
the site some CPU: compare rates from runs without it.

The cloud runs on SQLite in the site's data dir by default; ``--cloud-db URL`` puts it
on that database, ``--postgres`` on a throw-away PostgreSQL started for the repeat
(``tests/servers/postgres.py``: PostgreSQL 15 from Debian's package, fsync off), and
``--cloud-workers N`` serves it from N processes (PostgreSQL only).
``--repeats N`` runs everything N times (a fresh site each) and prints medians;
the load average is printed before each repeat.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PIPELINE_SIZE = 200
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
#: The processes ``--profile`` attaches py-spy to, each with its children.
TOP_ROLES = ("cloud", "dispatcher", "node agent")

from profile_summary import Spies, summary  # noqa: E402

from dmg.cli.runview import wait_for_run  # noqa: E402
from dmg.embedded.site import EmbeddedSite  # noqa: E402
from dmg.procs import stop_process  # noqa: E402
from settings import load  # noqa: E402
from settings.redistls import broker_password, client_url  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def wait_run(client, run_id: str, *, timeout: float, poll: float = 0.02) -> dict:
    """The run once it ended, followed as ``dmg pipeline run --wait`` follows it: the
    cloud's long-poll on the run's state (``GET /runs/{id}/wait``), which answers as soon as
    its status changes (``poll``: the retry pause while the cloud is unreachable). Polling
    ``GET /runs/{id}`` instead cost the cloud 15 % of its CPU in the bulk run (reading 200
    activity runs every 0.25 s) and saw the end up to 0.25 s late."""
    return wait_for_run(client, run_id, timeout=timeout, poll=poll)


def cloud_cost(site: EmbeddedSite, client) -> dict:
    """The cloud's counters and its process's CPU seconds, as of now."""
    import psutil

    metrics = client.request("GET", "/debug/metrics")
    pid = site.pid_of("cloud")
    if not pid:
        metrics["cpu_psutil"] = float("nan")
        return metrics
    parent = psutil.Process(pid)
    total = 0.0
    for process in [parent, *parent.children(recursive=True)]:  # the workers of --cloud-workers N
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    metrics["cpu_psutil"] = total
    return metrics


def cpu_seconds(process) -> float:
    import psutil

    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def lease_holder(site: EmbeddedSite) -> str:
    """The node holding the site's dispatcher lease ("" when none does)."""
    import redis

    from dispatcher.lease import holder_of
    from dmg.site.keys import SiteKeys

    client = redis.Redis.from_url(site.broker_url())
    try:
        raw = client.get(SiteKeys(site.gateway).lease)
    finally:
        client.close()
    return holder_of(raw.decode()) if raw else ""


def empty_files(work: Path, count: int) -> tuple[Path, Path]:
    """``work/source`` with ``count`` empty files ``fNNNNN`` and an empty ``work/sink``."""
    source, sink = work / "source", work / "sink"
    source.mkdir()
    sink.mkdir()
    for i in range(count):
        (source / f"f{i:05d}").touch()
    return source, sink


def site_cpu(site: EmbeddedSite) -> dict[str, float]:
    """CPU seconds so far of the dispatcher and of the nodes (psutil).

    ``dispatcher``: the lease holder's ``dmg node start`` process (the dispatcher's threads
    and that node's agent); ``nodes``: every node's Celery worker (main process and pool
    children) plus the other nodes' ``dmg node start`` processes (their agents and standby
    dispatcher candidates), summed over the nodes.
    """
    import psutil

    leader = lease_holder(site)
    dispatcher = nodes = 0.0
    for name in site.node_names:
        pid = site.pid_of(name)
        if not pid:
            continue
        try:
            main = psutil.Process(pid)
            children = main.children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        own = cpu_seconds(main)
        if name == leader:
            dispatcher += own
        else:
            nodes += own
        nodes += sum(cpu_seconds(child) for child in children)
    return {"dispatcher": dispatcher, "nodes": nodes}


def redis_commands(site: EmbeddedSite) -> dict[str, int]:
    """Calls per command on the site's Redis so far (``INFO commandstats``)."""
    import redis

    client = redis.Redis.from_url(site.broker_url())
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def redis_cpu(site: EmbeddedSite) -> float:
    """CPU seconds so far of the site's ``redis-server`` (psutil; nan for an external broker)."""
    import psutil

    pid = site.pid_of("redis")
    if not pid:
        return float("nan")
    try:
        return cpu_seconds(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return float("nan")


def redis_reads(site: EmbeddedSite) -> int:
    """Reads the site's Redis processed so far (``INFO stats`` ``total_reads_processed``: about
    one per client round trip)."""
    import redis

    client = redis.Redis.from_url(site.broker_url())
    try:
        return int(client.info("stats").get("total_reads_processed", 0))
    finally:
        client.close()


def redis_per_activity(before: dict[str, int], after: dict[str, int], count: int) -> dict:
    by_command = {k: (v - before.get(k, 0)) / count for k, v in after.items()}
    # The two INFO calls of the measure itself are not the site's.
    by_command["info"] = by_command.get("info", 0) - 1 / count
    busiest = {k: round(v, 2) for k, v in sorted(by_command.items(), key=lambda kv: -kv[1])[:30] if v > 0.005}
    return {"commands": sum(by_command.values()), "busiest": busiest}


def per_activity(before: dict, after: dict, count: int) -> dict[str, float]:
    routes = {k: (v - before["requests_by_route"].get(k, 0)) / count
              for k, v in after["requests_by_route"].items()}
    return {"requests": (after["requests"] - before["requests"]) / count,
            "statements": (after["statements"] - before["statements"]) / count,
            "transactions": (after["transactions"] - before["transactions"]) / count,
            "cpu_ms": (after["cpu_psutil"] - before["cpu_psutil"]) * 1000 / count,
            "routes": {k: v for k, v in sorted(routes.items(), key=lambda kv: -kv[1]) if v > 0.005}}


#: Submit-to-start, hop by hop (timestamps the cloud keeps; all on one machine's clock):
#: the run's creation -> the activity run claimed (the long-poll woke, the claim committed)
#: -> its shards queued for placement at the site (claim answer, source listed, plan
#: recorded) -> the shard placed (apply_async) -> the shard started on a node.
HOPS = ("claim", "list+plan", "place", "start")


def hop_times(run: dict, attempts: list[dict]) -> dict[str, float]:
    """The hops of one single-shard run (:data:`HOPS`), in seconds."""
    activity = run["activity_runs"][0]
    shard = activity["shards"][0]
    placed = min(a["placed_at"] for a in attempts if a.get("placed_at") is not None)
    return {"claim": activity["started_at"] - run["created_at"],
            "list+plan": shard["queued_at"] - activity["started_at"],
            "place": placed - shard["queued_at"], "start": shard["started_at"] - placed}


def site_roles(site: EmbeddedSite) -> dict[int, str]:
    """Each process of the site -> its role, for the profile summary (:mod:`profile_summary`):
    the cloud's, the lease holder's ``dmg node start`` (``dispatcher``: also its node's agent),
    the other nodes' (``node agent``), each node's Celery worker main process and its pool
    processes, the site's Redis."""
    import psutil

    roles: dict[int, str] = {}
    cloud = site.pid_of("cloud")
    if cloud:
        roles[cloud] = "cloud"
        roles.update((child.pid, "cloud") for child in psutil.Process(cloud).children(recursive=True))
    leader = lease_holder(site)
    for name in site.node_names:
        pid = site.pid_of(name)
        if not pid:
            continue
        roles[pid] = "dispatcher" if name == leader else "node agent"
        for child in psutil.Process(pid).children(recursive=True):
            # The pool processes are the Celery main process's children.
            roles[child.pid] = "celery pool" if child.ppid() != pid else "celery worker main"
    return roles


def bench_dmg(site: EmbeddedSite, work: Path, *, count: int, samples: int,
              profile: Path | None = None) -> dict[str, float]:
    source, _ = empty_files(work, count)
    with site.client() as client:
        client.add_store({"name": "bsrc", "type": "file", "location": str(source)})
        client.add_store({"name": "bdst", "type": "file", "location": str(work / "sink")})
        activities = [
            {"name": f"a{i}", "source": {"store": "bsrc", "path": f"f{i:05d}"},
             "sink": {"store": "bdst", "path": f"out{i:05d}"}}
            for i in range(count)
        ]
        # A pipeline holds at most 256 activities: the bulk goes in several pipelines.
        chunks = [activities[i:i + PIPELINE_SIZE] for i in range(0, count, PIPELINE_SIZE)]
        for k, chunk in enumerate(chunks):
            client.create_pipeline({"name": f"bulk{k}", "gateway": site.gateway, "activities": chunk})
        client.create_pipeline({"name": "one", "gateway": site.gateway, "activities": activities[:1]})

        cost_before = cloud_cost(site, client)
        cpu_before = site_cpu(site)
        redis_before = redis_commands(site)
        redis_cpu_before = redis_cpu(site)
        reads_before = redis_reads(site)
        roles = site_roles(site) if profile else {}
        with Spies(profile, [pid for pid, role in roles.items() if role in TOP_ROLES], roles) if profile \
                else contextlib.nullcontext() as spies:
            started = time.perf_counter()
            run_ids = [client.run_pipeline(f"bulk{k}")["id"] for k in range(len(chunks))]
            finished = [wait_run(client, run_id, timeout=600) for run_id in run_ids]
            elapsed = time.perf_counter() - started
        # Reports still travelling when the run succeeded count too: wait for quiet.
        time.sleep(2.0)
        cost = per_activity(cost_before, cloud_cost(site, client), count)
        redis_cost = redis_per_activity(redis_before, redis_commands(site), count)
        redis_cost["cpu_ms"] = (redis_cpu(site) - redis_cpu_before) * 1000 / count
        # Less the measure's own connections (INFO, the CPU look): about 4 reads.
        redis_cost["reads"] = (redis_reads(site) - reads_before - 4) / count
        cpu_after = site_cpu(site)
        cpu = {k: (cpu_after[k] - cpu_before[k]) * 1000 / count for k in cpu_after}
        bad = [r["status"] for r in finished if r["status"] != "Succeeded"]
        assert not bad, bad
        nodes = {s["node"] for r in finished for a in r["activity_runs"] for s in a["shards"]}

        latencies = []
        hops: dict[str, list[float]] = {name: [] for name in HOPS}
        for _ in range(samples):
            run = client.run_pipeline("one")
            done = wait_run(client, run["id"], timeout=60)
            shard = done["activity_runs"][0]["shards"][0]
            latencies.append(shard["started_at"] - done["created_at"])
            for name, value in hop_times(done, client.run_attempts(run["id"])).items():
                hops[name].append(value)
    copied = len(list((work / "sink").iterdir()))
    assert copied == count, f"{copied} files copied, expected {count}"
    return {"rate": count / elapsed, "seconds": elapsed, "nodes": len(nodes),
            "p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "cloud": cost,
            "redis": redis_cost, "cpu_ms": cpu,
            "hops": {name: percentile(values, 50) for name, values in hops.items()},
            "profile": summary(spies.files, roles) if spies is not None else ""}


def bench_celery(redis_url: str, work: Path, *, count: int, samples: int, workers: int,
                 concurrency: int) -> dict[str, float]:
    env = dict(os.environ, BENCH_REDIS_URL=redis_url, PYTHONPATH=str(ROOT / "bench"))
    logs = [open(work / f"celery{k}.log", "wb") for k in range(workers)]  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "noop_app", "worker", "-P", "prefork",
             "-c", str(concurrency), "-n", f"bench{k}@%h", "--without-gossip", "--without-mingle",
             "--loglevel", "WARNING"],
            env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=logs[k],
        )
        for k in range(workers)
    ]
    sys.path.insert(0, str(ROOT / "bench"))
    os.environ["BENCH_REDIS_URL"] = redis_url
    import noop_app

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            replies = noop_app.app.control.ping(timeout=0.5) or []
            if len(replies) >= workers:
                break
        else:
            raise TimeoutError("celery workers did not answer")
        started = time.perf_counter()
        results = [noop_app.noop.apply_async(args=[time.time()]) for _ in range(count)]
        for result in results:
            result.get(timeout=600)
        elapsed = time.perf_counter() - started
        latencies = []
        for _ in range(samples):
            body = noop_app.noop.apply_async(args=[time.time()]).get(timeout=60)
            latencies.append(body["started"] - body["submitted"])
    finally:
        for proc in procs:
            stop_process(proc, timeout=20)
        for fh in logs:
            fh.close()
    return {"rate": count / elapsed, "seconds": elapsed, "nodes": workers,
            "p50": percentile(latencies, 50), "p99": percentile(latencies, 99)}


def run_once(args: argparse.Namespace) -> tuple[dict, dict]:
    with tempfile.TemporaryDirectory(prefix="dmg-bench-") as tmp, _database(args) as cloud_db:
        work = Path(tmp)
        env = {"DMG_DATA_DIR": str(work / "data"), "DMG_CLOUD_METRICS": "1",
               "DMG_CLOUD_WORKERS": str(args.cloud_workers)}
        if cloud_db:
            env["DMG_CLOUD_DB"] = cloud_db
        settings = load(env)
        with EmbeddedSite(settings, nodes=args.nodes, flower=False,
                          node_concurrency=args.concurrency) as site:
            (work / "dmg").mkdir()
            profile = Path(args.profile) / f"repeat-{args.repeat_index}" if args.profile else None
            dmg = bench_dmg(site, work / "dmg", count=args.count, samples=args.latency_samples,
                            profile=profile)
            (work / "celery").mkdir()
            # The embedded Redis asks for the site's password (dmg up writes it in the data dir).
            celery_db = client_url(site.settings.redis_url.rsplit("/", 1)[0] + "/9", tls=False,
                                   password=broker_password(site.settings))
            peer = bench_celery(celery_db, work / "celery", count=args.count,
                                samples=args.latency_samples, workers=args.nodes,
                                concurrency=args.concurrency)
    return dmg, peer


@contextlib.contextmanager
def _database(args: argparse.Namespace) -> Iterator[str]:
    """The cloud's database URL for one repeat ("" for SQLite in the data dir)."""
    if not args.postgres:
        yield args.cloud_db
        return
    import shutil

    from dmg.procs import free_port
    from tests.servers.postgres import PostgresServer, _run_as

    root = Path(tempfile.mkdtemp(prefix="dmg-bench-pg-"))
    server = PostgresServer(root=root, port=free_port(), run_as=_run_as() or None)
    try:
        server.start()
        yield server.create_database("bench")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4, help="slots per node / worker")
    parser.add_argument("--latency-samples", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cloud-db", default="", metavar="URL",
                        help="the cloud's database (default: SQLite)")
    parser.add_argument("--postgres", action="store_true",
                        help="the cloud on a throw-away PostgreSQL started for each repeat")
    parser.add_argument("--cloud-workers", type=int, default=1, help="processes serving the cloud")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", default="", metavar="DIR",
                        help="record the site's processes with py-spy during the bulk run (raw files in "
                             "DIR) and print where each role's CPU went")
    parser.add_argument("--repeat-index", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # one repeat in a fresh process (Celery's app keeps its first broker)
        print(json.dumps(run_once(args)))
        return 0

    repeats = []
    for k in range(args.repeats):
        print(f"repeat {k + 1}/{args.repeats}: load average {os.getloadavg()}", file=sys.stderr)
        one = subprocess.run(
            [sys.executable, __file__, "--one", "--count", str(args.count), "--nodes", str(args.nodes),
             "--concurrency", str(args.concurrency), "--latency-samples", str(args.latency_samples),
             "--cloud-workers", str(args.cloud_workers), "--cloud-db", args.cloud_db,
             "--profile", args.profile, "--repeat-index", str(k + 1),
             *(["--postgres"] if args.postgres else [])],
            check=True, stdout=subprocess.PIPE, text=True)
        repeats.append(tuple(json.loads(one.stdout.strip().splitlines()[-1])))
        dmg_k, peer_k = repeats[-1]
        print(f"  dmg {dmg_k['rate']:.1f}/s p50 {dmg_k['p50'] * 1000:.1f} ms; celery {peer_k['rate']:.1f}/s "
              f"p50 {peer_k['p50'] * 1000:.1f} ms; hops (ms) "
              f"{ {k: round(v * 1000, 1) for k, v in dmg_k['hops'].items()} }; "
              f"cloud per activity: {dmg_k['cloud']}; redis per activity: {dmg_k['redis']}; "
              f"site CPU ms per activity: {dmg_k['cpu_ms']}", file=sys.stderr)
        if dmg_k.get("profile"):
            print(dmg_k["profile"], file=sys.stderr)

    def median(side: int, key: str) -> float:
        return statistics.median(r[side][key] for r in repeats)

    def median_cloud(key: str) -> float:
        return statistics.median(r[0]["cloud"][key] for r in repeats)

    keys = ("rate", "seconds", "p50", "p99")
    dmg = {k: median(0, k) for k in keys}
    peer = {k: median(1, k) for k in keys}
    cloud = {k: median_cloud(k) for k in ("requests", "statements", "transactions", "cpu_ms")}
    hops = {name: statistics.median(r[0]["hops"][name] for r in repeats) for name in HOPS}
    redis_cmds = statistics.median(r[0]["redis"]["commands"] for r in repeats)
    redis_cpu_ms = statistics.median(r[0]["redis"]["cpu_ms"] for r in repeats)
    redis_reads_n = statistics.median(r[0]["redis"]["reads"] for r in repeats)
    site_cpu_ms = {k: statistics.median(r[0]["cpu_ms"][k] for r in repeats) for k in ("dispatcher", "nodes")}
    busiest = dict(list(repeats[len(repeats) // 2][0]["redis"]["busiest"].items())[:12])
    routes = repeats[len(repeats) // 2][0]["cloud"]["routes"]
    rows = [("dmg gateway", dmg), ("plain celery", peer)]
    loadavg = os.getloadavg()
    if args.json:
        print(json.dumps({"dmg gateway": dmg, "plain celery": peer, "cloud per activity": cloud,
                          "submit to start, median per hop": hops,
                          "requests per activity by route": routes,
                          "redis commands per activity": redis_cmds,
                          "redis CPU ms per activity": redis_cpu_ms,
                          "redis reads per activity": redis_reads_n,
                          "site CPU ms per activity": site_cpu_ms, "busiest redis commands": busiest,
                          "repeats": args.repeats,
                          "load": loadavg}, indent=2))
        return 0
    where = "PostgreSQL" if args.postgres or args.cloud_db.startswith("postgres") else "SQLite"
    print(f"cloud on {where}, {args.cloud_workers} worker(s); summed over its processes")
    print(f"{args.count} activities, {args.nodes} nodes x {args.concurrency} slots, same Redis, same run; "
          f"median of {args.repeats}; load average now {loadavg[0]:.2f} {loadavg[1]:.2f} {loadavg[2]:.2f}")
    print(f"{'':14}{'activities/s':>14}{'seconds':>10}{'p50 start ms':>14}{'p99 start ms':>14}"
          f"{'redis cmds':>12}{'redis CPU ms':>14}{'dispatcher CPU ms':>19}{'node CPU ms':>13}")
    for name, row in rows:
        cmds = (f"{redis_cmds:>12.1f}{redis_cpu_ms:>14.2f}{site_cpu_ms['dispatcher']:>19.2f}"
                f"{site_cpu_ms['nodes']:>13.2f}"
                if row is dmg else "")
        print(f"{name:14}{row['rate']:>14.1f}{row['seconds']:>10.2f}"
              f"{row['p50'] * 1000:>14.1f}{row['p99'] * 1000:>14.1f}{cmds}")
    print("per activity of the bulk run: redis CPU = the site's redis-server process; "
          "dispatcher CPU = the lease holder's `dmg node start` process; "
          "node CPU = every node's Celery worker (main + pool) and the other nodes' agents, summed")
    print(f"{'ratio dmg/celery':18}{dmg['rate'] / peer['rate']:>10.3f}"
          f"{'':10}{dmg['p50'] / peer['p50']:>14.1f}x{dmg['p99'] / peer['p99']:>13.1f}x")
    print(f"cloud per activity: {cloud['requests']:.2f} requests, {cloud['statements']:.1f} SQL statements, "
          f"{cloud['transactions']:.2f} transactions, {cloud['cpu_ms']:.1f} ms CPU")
    for route, n in routes.items():
        print(f"  {n:6.2f}  {route}")
    print(f"redis reads (client round trips) per activity: {redis_reads_n:.2f}")
    print("redis commands per activity (site's Redis, every client), busiest: "
          + ", ".join(f"{name} {n}" for name, n in busiest.items()))
    print("submit -> start on an idle site, median per hop (ms): "
          + ", ".join(f"{name} {value * 1000:.1f}" for name, value in hops.items()))
    if args.profile:  # the middle repeat's (each repeat's is printed above, with its raw files)
        print(repeats[len(repeats) // 2][0]["profile"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
