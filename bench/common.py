"""Shared helpers of the copy benchmarks: data, timing, a dmg site, the result table.

Every benchmark here runs dmg and its peers on the same generated data in the same
run. The page cache cannot be dropped without privileges, so it is made *warm*
for everyone instead: :func:`warm_cache` reads the whole source once before the
first tool runs (the data fits in RAM many times over), and :func:`settle` flushes
the previous tool's dirty pages (``sync``, not timed) before the next one starts.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dmg.cli.demo import compare_trees  # noqa: E402

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
WRITE_CHUNK = 8 * MIB
SMALL_PER_DIR = 100


# -- data ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dataset:
    """A generated folder: its name in the table, where it is, what it holds."""

    name: str
    root: Path
    files: int
    bytes: int


def write_random_file(path: Path, size: int, *, chunk: int = WRITE_CHUNK) -> None:
    """``size`` bytes of ``os.urandom`` (incompressible, no sparse holes) in ``chunk`` writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, chunk)
            fh.write(os.urandom(n))
            left -= n


def make_large(root: Path, *, count: int, size: int, name: str = "large") -> Dataset:
    """``count`` random files of ``size`` bytes directly in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        write_random_file(root / f"large-{index:02d}.bin", size)
    return Dataset(name, root, count, count * size)


def make_small(root: Path, *, count: int, size: int, name: str = "small") -> Dataset:
    """``count`` random files of ``size`` bytes, :data:`SMALL_PER_DIR` per sub-folder."""
    root.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        folder = root / f"d{index // SMALL_PER_DIR:04d}"
        if index % SMALL_PER_DIR == 0:
            folder.mkdir(exist_ok=True)
        (folder / f"f{index:06d}.bin").write_bytes(os.urandom(size))
    return Dataset(name, root, count, count * size)


def tree_stats(root: Path) -> tuple[int, int]:
    """(files, bytes) of every regular file under ``root``; (0, 0) if it does not exist."""
    files = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(dirpath, name)).st_size
    return files, size


def warm_cache(*roots: Path) -> int:
    """Read every file under ``roots`` once (so each tool starts with it in the page cache)."""
    total = 0
    buf = bytearray(WRITE_CHUNK)
    for root in roots:
        paths = [root] if root.is_file() else [Path(d, n) for d, _s, ns in os.walk(root) for n in ns]
        for path in paths:
            with open(path, "rb", buffering=0) as fh:
                while n := fh.readinto(buf):
                    total += n
    return total


def settle() -> None:
    """Write back the previous tool's dirty pages so it does not slow the next one (not timed)."""
    os.sync()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def check_free_space(where: Path, need: int) -> None:
    free = shutil.disk_usage(where).free
    if free < need * 1.1:
        raise SystemExit(f"error: {where} has {free / GIB:.1f} GiB free, this run needs about "
                         f"{need / GIB:.1f} GiB; pick smaller sizes or --tmp elsewhere")


# -- running tools ---------------------------------------------------------------------
def copy_arguments(description: str, tools: Sequence[str], *,
                   extra: Callable[[argparse.ArgumentParser], None] | None = None,
                   ) -> tuple[argparse.Namespace, list[str]]:
    """The flags every copy benchmark takes (and ``extra``'s); -> (arguments, the tools asked for)."""
    parser = argparse.ArgumentParser(description=description)
    if extra is not None:
        extra(parser)
    parser.add_argument("--large-count", type=int, default=4)
    parser.add_argument("--large-mib", type=int, default=256, help="size of each large file")
    parser.add_argument("--small-count", type=int, default=10_000)
    parser.add_argument("--small-kib", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=None, help="slots per node (default: sized)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool and dataset; median shown")
    parser.add_argument("--tools", default=",".join(tools))
    parser.add_argument("--tmp", type=Path, default=None, help="where the temp dir goes")
    parser.add_argument("--tls", action="store_true",
                        help="run the dmg site encrypted, as `dmg up --tls` does (Redis TLS only, HTTPS)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--phases", action="store_true",
                        help="print where dmg's time goes (phases of each run, medians)")
    args = parser.parse_args()
    chosen = [t for t in args.tools.split(",") if t]
    unknown = set(chosen) - set(tools)
    if unknown:
        parser.error(f"unknown tools {sorted(unknown)}; choose from {', '.join(tools)}")
    for tool, missing in (("rclone", "rclone is not installed (apt-get install rclone)"),
                          ("aws", "awscli is missing: .venv/bin/pip install -e '.[bench]'")):
        if tool in chosen and tool_path(tool) is None:
            parser.error(f"{missing} or leave it out with --tools")
    return args, chosen


def tool_path(name: str) -> str | None:
    """``name`` in the venv's bin (awscli installs there), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    return shutil.which(name)


def run_timed(args: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    """Run ``args`` to completion; wall-clock seconds. RuntimeError with stderr's tail on failure."""
    started = time.perf_counter()
    proc = subprocess.run(list(args), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{args[0]} exited {proc.returncode}: {' | '.join(tail)}")
    return elapsed


def tool_version(args: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(args), capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "missing"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def verify_tree(source: Dataset, target: Path, *, byte_compare: bool) -> str:
    """Check ``target`` holds the dataset: file count and bytes, and optionally every byte.
    Returns the verdict for the table; raises AssertionError on a mismatch."""
    files, size = tree_stats(target)
    if (files, size) != (source.files, source.bytes):
        raise AssertionError(f"{target}: {files} files / {size} bytes, expected "
                             f"{source.files} / {source.bytes}")
    if not byte_compare:
        return "count+bytes"
    diff = compare_trees(source.root, target)
    if not diff.matches:
        raise AssertionError(f"{target}: {diff.describe()}")
    return "byte-compare"


# -- results ---------------------------------------------------------------------------
@dataclass
class Row:
    """One tool on one dataset. ``seconds`` is the median of ``samples``."""

    tool: str
    dataset: str
    files: int
    bytes: int
    samples: list[float] = field(default_factory=list)
    verified: str = ""
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.samples else float("nan")

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds if self.samples else float("nan")

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body.update(seconds=self.seconds, mb_per_s=self.mb_per_s, files_per_s=self.files_per_s)
        return body


def measure(row: Row, once: Callable[[int], tuple[float, str]], *, repeat: int) -> Row:
    """Run ``once(i)`` ``repeat`` times (each returns seconds and its verification verdict);
    a failure is recorded in ``row.error`` and ends this row, not the benchmark."""
    for i in range(repeat):
        try:
            seconds, verdict = once(i)
        except (RuntimeError, AssertionError, TimeoutError, OSError) as exc:
            row.error = str(exc)[:400]
            print(f"  {row.tool} on {row.dataset}: FAILED: {row.error}", file=sys.stderr)
            return row
        row.samples.append(seconds)
        row.verified = verdict
        print(f"  {row.tool:<8} {row.dataset:<6} {seconds:8.2f} s  ({verdict})", file=sys.stderr)
    return row


def measure_each(rows: list[Row], datasets: list[Dataset], tools: list[str],
                 once: Callable[[str, Dataset, int], tuple[float, str]], *, repeat: int) -> None:
    """One row per dataset and tool, appended to ``rows``, each measured ``repeat`` times
    with ``once(tool, dataset, i)``."""
    for dataset in datasets:
        for tool in tools:
            rows.append(Row(tool, dataset.name, dataset.files, dataset.bytes))
            measure(rows[-1], functools.partial(once, tool, dataset), repeat=repeat)


def ratio(row: Row, rows: Sequence[Row], baseline: str = "dmg") -> float:
    """``row``'s time over the baseline's on the same dataset: above 1, the baseline is faster."""
    base = next((r for r in rows if r.tool == baseline and r.dataset == row.dataset and r.samples), None)
    if base is None or not row.samples:
        return float("nan")
    return row.seconds / base.seconds


def format_table(rows: Sequence[Row], *, baseline: str = "dmg") -> str:
    head = f"{'tool':<8} {'dataset':<8} {'files':>7} {'MiB':>7} {'seconds':>8} {'MB/s':>8} " \
           f"{'files/s':>9} {'t/t_' + baseline:>8}  verified"
    lines = [head, "-" * len(head)]
    for row in rows:
        if not row.samples:
            lines.append(f"{row.tool:<8} {row.dataset:<8} {row.files:>7} {row.bytes / MIB:>7.0f} "
                         f"{'-':>8} {'-':>8} {'-':>9} {'-':>8}  FAILED: {row.error[:60]}")
            continue
        lines.append(f"{row.tool:<8} {row.dataset:<8} {row.files:>7} {row.bytes / MIB:>7.0f} "
                     f"{row.seconds:>8.2f} {row.mb_per_s:>8.1f} {row.files_per_s:>9.0f} "
                     f"{ratio(row, rows, baseline):>8.2f}  {row.verified}")
    return "\n".join(lines)


def goal_lines(rows: Sequence[Row], goals: Sequence[tuple[str, str, float]]) -> list[str]:
    """One line per (peer, dataset, minimum t_peer/t_dmg): met, missed, or not measured."""
    out = []
    for peer, dataset, minimum in goals:
        row = next((r for r in rows if r.tool == peer and r.dataset == dataset), None)
        value = ratio(row, rows) if row is not None else float("nan")
        verdict = "not measured" if value != value else "met" if value >= minimum else "MISSED"
        out.append(f"goal {dataset}: t_{peer}/t_dmg >= {minimum:.2f}: {value:.2f} {verdict}")
    return out


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in load],
            "kernel": platform.release(), "python": platform.python_version()}


def emit(rows: Sequence[Row], *, title: str, meta: dict[str, Any], goals: Sequence[tuple[str, str, float]],
         as_json: bool) -> None:
    meta = {**meta, "load_avg_after": [round(x, 2) for x in os.getloadavg()]}
    if as_json:
        print(json.dumps({"title": title, "meta": meta, "rows": [r.to_json() for r in rows],
                          "goals": goal_lines(rows, goals)}, indent=2))
        return
    print(title)
    for key, value in meta.items():
        print(f"  {key}: {value}")
    print()
    print(format_table(rows))
    print()
    for line in goal_lines(rows, goals):
        print(line)


# -- dmg -------------------------------------------------------------------------------
RUN_DONE = ("Succeeded", "Failed", "Cancelled")
#: Seconds between polls of a dmg run (its end time comes from the cloud, not from the poll).
POLL = 0.25


def wait_run(client: Any, run_id: str, *, timeout: float, poll: float = 0.05) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run: dict[str, Any] = client.run(run_id)
        if run["status"] in RUN_DONE:
            return run
        time.sleep(poll)
    raise TimeoutError(f"dmg run {run_id} did not finish in {timeout:.0f} s")


@contextlib.contextmanager
def dmg_site(data_dir: Path, *, nodes: int, concurrency: int | None, tls: bool = False) -> Iterator[Any]:
    """An EmbeddedSite (no Flower; encrypted with ``tls``) in ``data_dir``; stopped on exit,
    also on error."""
    from dmg.embedded.site import EmbeddedSite
    from dmg.procs import free_port
    from settings import load

    # A port of its own, not the default 8050 another developer's site may be taking.
    settings = load({"DMG_DATA_DIR": str(data_dir), "DMG_CLOUD_BIND": f"127.0.0.1:{free_port('127.0.0.1')}"})
    print(f"starting a {nodes}-node dmg site in {data_dir} ...", file=sys.stderr)
    with EmbeddedSite(settings, nodes=nodes, flower=False, node_concurrency=concurrency, tls=tls) as site:
        yield site


def node_limits(site: Any) -> dict[str, int]:
    with site.client() as client:
        return {str(n["name"]): int(n.get("limit") or 0) for n in client.list_nodes(site.gateway)}


class DmgCopier:
    """Copies through the gateway: one pipeline (one activity) per source/sink pair."""

    def __init__(self, site: Any) -> None:
        self.site = site
        self._stores: set[str] = set()
        self._pipelines: set[str] = set()

    def store(self, name: str, kind: str, location: str, options: dict[str, Any] | None = None) -> str:
        if name not in self._stores:
            with self.site.client() as client:
                client.add_store({"name": name, "type": kind, "location": location,
                                  "options": options or {}})
            self._stores.add(name)
        return name

    def copy(self, pipeline: str, source: str, sink: str, *, timeout: float = 1800,
             options: dict[str, Any] | None = None) -> tuple[float, dict[str, Any]]:
        """Run ``source`` → ``sink`` (whole stores); seconds from run_pipeline to Succeeded
        (the run's ``ended_at`` as the cloud recorded it), and :func:`run_summary`."""
        with self.site.client() as client:
            if pipeline not in self._pipelines:
                client.create_pipeline({"name": pipeline, "gateway": self.site.gateway, "activities": [
                    {"name": "copy", "source": {"store": source, "path": ""},
                     "sink": {"store": sink, "path": ""}, "options": options or {}}]})
                self._pipelines.add(pipeline)
            submitted = time.time()
            run_id = str(client.run_pipeline(pipeline)["id"])
            run = wait_run(client, run_id, timeout=timeout, poll=POLL)
            seen = time.time()
        if run["status"] != "Succeeded":
            errors = {str(a.get("error")) for a in run.get("activity_runs") or [] if a.get("error")}
            raise RuntimeError(f"dmg run {run['status']}: {'; '.join(sorted(errors))[:300]}")
        summary = run_summary(run)
        summary["seen_after_seconds"] = seen - submitted
        summary["phases"] = run_phases(run, submitted=submitted, seen=seen)
        # The cloud stamps ended_at when it derives Succeeded (same machine, same clock): the
        # time does not depend on how often this process polls, and slow polling keeps the
        # cloud free for the nodes.
        ended = run.get("ended_at")
        return (float(ended) - submitted if ended else seen - submitted), summary


def run_summary(run: dict[str, Any]) -> dict[str, Any]:
    """Shards, nodes, and the time between the first shard start and the last shard end."""
    shards = [s for a in run.get("activity_runs") or [] for s in a.get("shards") or []]
    starts = [float(s["started_at"]) for s in shards if s.get("started_at")]
    ends = [float(s["ended_at"]) for s in shards if s.get("ended_at")]
    nodes: dict[str, int] = {}
    for shard in shards:
        nodes[str(shard.get("node"))] = nodes.get(str(shard.get("node")), 0) + 1
    return {"shards": len(shards), "shards_per_node": nodes,
            "created_to_first_shard_start": (min(starts) - float(run["created_at"])) if starts else None,
            "shard_span_seconds": (max(ends) - min(starts)) if starts and ends else None}


#: The phases of a run, in order: (name, what ends it). Each phase runs from the end of
#: the one before; the marks come from the cloud's records (same machine, same clock),
#: the last from the client that waits.
PHASES = (
    ("claim", "the dispatcher claimed the activity run (its claimed_at)"),
    ("list+plan", "the cloud has the shards (first queued_at): listing, cutting, plan request"),
    ("to first start", "the first shard started on a node: placement, Celery, shard start-up"),
    ("copy", "the last shard ended on its node (shard ended_at, the node's clock)"),
    ("end reported", "the run is Succeeded in the cloud (ended_at): final reports, file results"),
    ("seen by client", "the waiting client saw it (its poll)"),
)


def run_phases(run: dict[str, Any], *, submitted: float, seen: float) -> dict[str, float | None]:
    """Seconds spent in each of :data:`PHASES` (None when a mark is missing)."""
    activities = run.get("activity_runs") or []
    shards = [s for a in activities for s in a.get("shards") or []]

    def mark(values: list[Any], pick: Callable[[list[float]], float] = min) -> float | None:
        found = [float(v) for v in values if v]
        return pick(found) if found else None

    marks = [submitted,
             mark([a.get("claimed_at") for a in activities]),
             mark([s.get("queued_at") for s in shards]),
             mark([s.get("started_at") for s in shards]),
             mark([s.get("ended_at") for s in shards], max),
             float(run["ended_at"]) if run.get("ended_at") else None,
             seen]
    out: dict[str, float | None] = {}
    for (name, _why), before, after in zip(PHASES, marks, marks[1:], strict=False):
        out[name] = (after - before) if before is not None and after is not None else None
    return out


def list_seconds(root: Path) -> float:
    """Seconds one listing of ``root`` takes with the ``file`` connector the dispatcher uses."""
    from dmg.connectors import StoreSpec, connector_for

    connector = connector_for(StoreSpec(name="bench", type="file", location=str(root)))
    started = time.perf_counter()
    try:
        count = sum(1 for _entry in connector.list(""))
    finally:
        connector.close()
    elapsed = time.perf_counter() - started
    print(f"  listing {count} files took {elapsed:.3f} s", file=sys.stderr)
    return elapsed


def format_phases(rows: Sequence[Row]) -> str:
    """The median seconds of each phase over each dmg row's runs (``--phases``)."""
    lines = []
    for row in rows:
        runs = [r["phases"] for r in row.extra.get("runs", []) if r.get("phases")]
        if row.tool != "dmg" or not runs:
            continue
        lines.append(f"dmg on {row.dataset}: where the time goes (median of {len(runs)} runs, seconds)")
        for name, why in PHASES:
            values = [r[name] for r in runs if r.get(name) is not None]
            median = f"{statistics.median(values):8.3f}" if values else f"{'-':>8}"
            lines.append(f"  {name:<16}{median}  {why}")
        lines.append(f"  shards per run: {[r.get('shards') for r in row.extra.get('runs', [])]}")
        listing = row.extra.get("listing_seconds")
        if listing is not None:
            lines.append(f"  (a listing of the source alone, in this process: {listing:.3f} s)")
    return "\n".join(lines)
