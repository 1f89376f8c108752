"""Benchmark: the cloud's CPU per request, route by route, on the cloud alone.

    .venv/bin/python bench/cloud_cost.py [--requests 300] [--activities 200] [--repeats 3]

A cloud (``dmg cloud serve``, SQLite in a temp dir) is started as a child process and
sent the requests a site sends it, one kind at a time over one keep-alive connection:
a node's heartbeat, an empty claim (``wait`` 0), the dispatcher's cancel check, a
user's ``GET /runs/{id}`` of a run of ``--activities`` activity runs, and the report
batches of one-file activities (``POST /nodes/reports``: the dispatcher's plan and
placement of ``--batch`` activities in one batch, then the node's final report with its
file result for each, in one batch, over ``--report-runs`` runs; its figure is per
activity, both batches). For each kind it
prints the cloud process's CPU per request (psutil: user + system, before and after the
block), the median of the repeats. CPU time moves far less with the machine's load
than throughput does, so two revisions compare here when ``bench/activities.py``
cannot tell them apart on a busy machine: run it from each tree (``PYTHONPATH=<other
checkout>`` for another revision; the cloud child inherits it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402

from dmg.cloud.filerows import as_row  # noqa: E402
from dmg.cloud.limits import MAX_FILE_RESULTS  # noqa: E402
from dmg.cloud.server import start_cloud_subprocess  # noqa: E402
from settings import Settings  # noqa: E402


def cpu_ms(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return (times.user + times.system) * 1000


def measure(pid: int, count: int, send: Callable[[], httpx.Response]) -> float:
    """The cloud's CPU ms per request over ``count`` requests (each must answer 2xx)."""
    send()  # warm: the first request of a kind compiles its statements
    before = cpu_ms(pid)
    for _ in range(count):
        answer = send()
        assert answer.is_success, answer.text
    return (cpu_ms(pid) - before) / count


def one_repeat(args: argparse.Namespace, work: Path) -> dict[str, float]:
    settings = Settings(data_dir=work, log_level="WARNING")
    cloud = start_cloud_subprocess(settings, bind="127.0.0.1:0")
    try:
        api = f"{cloud.url}/api/v1"
        with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {cloud.api_token}"},
                          timeout=60) as user:
            keys = user.post("/gateways", json={"name": "bench"}).json()
            token = user.post("/nodes/register", json={"key": keys["key1"], "name": "n1",
                                                       "version": _version()}).json()["token"]
            user.post("/stores", json={"name": "src", "type": "file", "location": str(work / "in")})
            user.post("/stores", json={"name": "dst", "type": "file", "location": str(work / "out")})
            user.post("/pipelines", json={"name": "p", "gateway": "bench", "activities": [
                {"name": f"a{i}", "source": {"store": "src", "path": f"f{i}"},
                 "sink": {"store": "dst", "path": f"f{i}"}} for i in range(args.activities)]})
            run_id = user.post("/pipelines/p/runs").json()["id"]
            with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=60) as node:
                for _ in range(args.report_runs - 1):  # more activity runs for the report batches
                    user.post("/pipelines/p/runs").raise_for_status()
                claimed_ids: list[str] = []
                while len(claimed_ids) < args.activities * args.report_runs:
                    claimed = node.post("/dispatch/claim", json={"epoch": 1, "wait": 0, "limit": 256})
                    assert claimed.is_success, claimed.text
                    claimed_ids += [a["id"] for a in claimed.json()["activity_runs"]]
                batches = _report_batches(claimed_ids, args.batch)
                beat = {"role": "dispatcher", "running": 1, "limit": 4, "epoch": 1}
                n = args.requests
                return {
                    "heartbeat": measure(cloud.pid, n, lambda: node.post("/nodes/heartbeat", json=beat)),
                    "empty claim": measure(cloud.pid, n, lambda: node.post(
                        "/dispatch/claim", json={"epoch": 1, "wait": 0, "limit": 16})),
                    "GET /dispatch/cancelled": measure(cloud.pid, n, lambda: node.get("/dispatch/cancelled")),
                    f"GET /runs/{{id}} ({args.activities} activity runs)": measure(
                        cloud.pid, max(n // 10, 5), lambda: user.get(f"/runs/{run_id}")),
                    f"report batches per activity (batches of {args.batch})": measure(
                        cloud.pid, len(batches) - 1, lambda: node.post("/nodes/reports", json=batches.pop()))
                    * 2 / args.batch,
                    **_file_rows(args, cloud.pid, node, claimed_ids[-1]),
                }
    finally:
        cloud.stop()


def _report_batches(activity_run_ids: list[str], size: int) -> list[dict[str, Any]]:
    """Pairs of batches (popped from the end: the plans and placements, then the final
    reports) for every ``size`` activity runs, one one-file shard each."""
    batches: list[dict[str, Any]] = []
    for start in range(0, len(activity_run_ids) - size + 1, size):
        chunk = activity_run_ids[start:start + size]
        plans: list[dict[str, Any]] = []
        placed: list[dict[str, Any]] = []
        done: list[dict[str, Any]] = []
        for activity_run_id in chunk:
            shard_id = f"{activity_run_id}-0"
            plans.append({"plan": {"activity_run_id": activity_run_id, "epoch": 1,
                                   "shards": [{"id": shard_id, "index": 0, "files": 1, "bytes": 10}]}})
            placed.append({"shard_id": shard_id, "report": {"attempt": 1, "status": "placed", "node": "n1",
                                                            "epoch": 1}})
            done.append({"shard_id": shard_id, "report": {"attempt": 1, "status": "succeeded", "files": 1,
                                                          "bytes": 10, "files_total": 1, "bytes_total": 10},
                         "files": {"attempt": 1, "files": [{"path": "f", "source": "f", "bytes": 10,
                                                            "status": "copied", "checksum": "c"}]}})
        batches.append({"items": done})
        batches.append({"items": plans + placed})
    return batches  # popped from the end: each chunk's plans, then its final reports


def _file_rows(args: argparse.Namespace, pid: int, node: httpx.Client,
               activity_run_id: str) -> dict[str, float]:
    """The cloud's CPU per file result row: batches of ``--file-rows`` new 8 KiB results of
    one running shard (its file-results items alone, as a node's outbox sends them mid-copy:
    rows, in items of at most MAX_FILE_RESULTS; ``--file-form objects``: as earlier nodes)."""
    shard_id = f"{activity_run_id}-big"
    count = args.file_rows
    setup = [{"plan": {"activity_run_id": activity_run_id, "epoch": 1,
                       "shards": [{"id": shard_id, "index": 0, "files": 1_000_000, "bytes": 1}]}},
             {"shard_id": shard_id, "report": {"attempt": 1, "status": "placed", "node": "n1", "epoch": 1}},
             {"shard_id": shard_id, "report": {"attempt": 1, "status": "running"}}]
    answer = node.post("/nodes/reports", json={"items": setup})
    assert answer.is_success and all(r["ok"] for r in answer.json()["results"]), answer.text
    sent = iter(range(10**9))

    def batch() -> httpx.Response:
        start = next(sent) * count
        files = [{"path": f"d{(start + i) // 500}/f{start + i:07d}.bin", "source": f"d{(start + i) // 500}/"
                  f"f{start + i:07d}.bin", "bytes": 8192, "checksum": "xxh3:0123456789abcdef",
                  "status": "copied", "verified": "xxh3", "tries": 1, "started": 1.7e9 + i,
                  "ended": 1.7e9 + i + 0.0001}
                 for i in range(count)]
        form = "files" if args.file_form == "objects" else "rows"
        body_files = files if form == "files" else [as_row(f) for f in files]
        return node.post("/nodes/reports", json={"items": [
            {"shard_id": shard_id, "files": {"attempt": 1, form: body_files[k:k + MAX_FILE_RESULTS]}}
            for k in range(0, count, MAX_FILE_RESULTS)]})

    requests = max(args.requests // 5, 10)
    return {f"file result row (batches of {count}), us": measure(pid, requests, batch) * 1000 / count}


def _version() -> str:
    from dmg.version import __version__

    return __version__


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="requests of each kind")
    parser.add_argument("--activities", type=int, default=200, help="activity runs of the run read")
    parser.add_argument("--batch", type=int, default=10, help="activities per report batch")
    parser.add_argument("--report-runs", type=int, default=5,
                        help="runs of --activities activity runs for the report batches")
    parser.add_argument("--file-rows", type=int, default=950, help="file results per batch")
    parser.add_argument("--file-form", choices=("rows", "objects"), default="rows",
                        help="how the file results travel (objects: as nodes of earlier builds)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {}
    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1}/{args.repeats}: load average {os.getloadavg()}", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="dmg-cloud-cost-") as tmp:
            for kind, value in one_repeat(args, Path(tmp)).items():
                samples.setdefault(kind, []).append(value)
    print(f"cloud CPU ms per request (median of {args.repeats}; load average now "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; dmg from {_tree()})")
    for kind, values in samples.items():
        print(f"  {statistics.median(values):7.2f}  {kind}")
    return 0


def _tree() -> str:
    import dmg

    return str(Path(dmg.__file__).resolve().parent.parent)


if __name__ == "__main__":
    raise SystemExit(main())
