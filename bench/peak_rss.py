"""Benchmark: peak memory of a dmg node copying one large file, next to ``rclone copy``'s.

    .venv/bin/python bench/peak_rss.py [--size-gib 4] [--concurrency N] [--interval 0.1]
                                       [--repeat 3] [--json]

One file of ``--size-gib`` GiB of ``os.urandom`` bytes (no sparse holes, nothing to
compress), read once (warm page cache), copied ``file`` → ``file``:

* ``dmg``: a 1-node embedded site, one pipeline with one activity. Every process of
  the node (the ``dmg node start`` agent, the Celery main process, its prefork pool
  children) is sampled every ``--interval`` s with psutil: RSS, and PSS from
  ``/proc/PID/smaps_rollup`` (RSS counts pages a forked child shares with its parent
  in both; PSS splits them, so PSS adds up honestly). Each process's kernel
  high-water mark ``VmHWM`` is reset (``clear_refs``) just before the run and read
  after it: the exact peak, which sampling can miss.
* ``rclone``: ``rclone copy`` of the same file, under ``/usr/bin/time -v`` when
  available (the kernel's maximum RSS), and sampled the same way as dmg.

The idle RSS of the node (before the run) is shown next to its peak; ``HWM-idle`` is
what the copy itself added to a process. With ``--repeat N`` both copies run N times
(dmg, then rclone, each time on a new site) and the table shows the run with the median
summed PSS, followed by the medians of each figure and the load before each repeat.
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    GIB,
    MIB,
    DmgCopier,
    check_free_space,
    dmg_site,
    machine,
    remove_tree,
    settle,
    tool_path,
    tool_version,
    warm_cache,
    write_random_file,
)


# -- sampling -------------------------------------------------------------------------
def pss_bytes(pid: int) -> int:
    """The process's proportional set size (0 when /proc has no smaps_rollup)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def hwm_bytes(pid: int) -> int:
    """The kernel's peak RSS of the process (``VmHWM``) since start or the last reset."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            match = re.search(r"^VmHWM:\s+(\d+) kB", fh.read(), re.M)
    except OSError:
        return 0
    return int(match.group(1)) * 1024 if match else 0


def reset_hwm(pid: int) -> bool:
    """Reset ``VmHWM`` to the current RSS (``echo 5 > /proc/PID/clear_refs``)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


@dataclass
class Peak:
    label: str
    rss_idle: int = 0
    rss_peak: int = 0
    pss_peak: int = 0
    hwm: int = 0


@dataclass
class Sampler:
    """Samples the processes ``find()`` returns (pid -> label) every ``interval`` s in a thread."""

    find: Any
    interval: float
    peaks: dict[int, Peak] = field(default_factory=dict)
    sum_rss_peak: int = 0
    sum_pss_peak: int = 0
    pool_rss_peak: int = 0
    pool_pss_peak: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        rss_sum = pss_sum = pool_rss = pool_pss = 0
        for pid, label in self.find().items():
            try:
                rss = psutil.Process(pid).memory_info().rss
            except psutil.Error:
                continue
            pss = pss_bytes(pid)
            peak = self.peaks.setdefault(pid, Peak(label, rss_idle=rss))
            peak.rss_peak = max(peak.rss_peak, rss)
            peak.pss_peak = max(peak.pss_peak, pss)
            rss_sum += rss
            pss_sum += pss
            if label.startswith("pool child"):
                pool_rss += rss
                pool_pss += pss
        self.sum_rss_peak = max(self.sum_rss_peak, rss_sum)
        self.sum_pss_peak = max(self.sum_pss_peak, pss_sum)
        self.pool_rss_peak = max(self.pool_rss_peak, pool_rss)
        self.pool_pss_peak = max(self.pool_pss_peak, pool_pss)
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


def node_processes(node_pid: int) -> dict[int, str]:
    """The node's process tree, labelled: agent, celery main, pool child N."""
    try:
        node = psutil.Process(node_pid)
        found = {node_pid: "node agent (dmg node start)"}
        for child in node.children():
            with contextlib.suppress(psutil.Error):
                is_celery = "celery" in " ".join(child.cmdline())
                found[child.pid] = "celery main" if is_celery else f"node child {child.pid}"
                if is_celery:
                    pool = sorted(child.children(recursive=True), key=lambda p: p.pid)
                    for k, grandchild in enumerate(pool):
                        found[grandchild.pid] = f"pool child {k + 1}"
    except psutil.Error:
        return {}
    return found


# -- the two copies -------------------------------------------------------------------
def run_dmg(work: Path, source_dir: Path, *, size: int, concurrency: int | None,
            interval: float) -> dict[str, Any]:
    dest = work / "out-dmg"
    dest.mkdir()
    data_dir = Path(tempfile.mkdtemp(prefix="dmg-data-", dir=work))  # a new site each repeat
    with dmg_site(data_dir, nodes=1, concurrency=concurrency) as site:
        node_pid = site.pid_of(site.node_names[0])
        assert node_pid is not None
        copier = DmgCopier(site)
        source = copier.store("src", "file", str(source_dir))
        sink = copier.store("dst", "file", str(dest))
        sampler = Sampler(lambda: node_processes(node_pid), interval)
        sampler.sample()  # idle RSS of every process, before any work
        pids = list(node_processes(node_pid))
        reset = all(reset_hwm(pid) for pid in pids)
        settle()
        with sampler:
            seconds, summary = copier.copy("one-big-file", source, sink)
        for pid, peak in sampler.peaks.items():
            peak.hwm = hwm_bytes(pid) if reset else 0
    ok = filecmp.cmp(source_dir / "big.bin", dest / "big.bin", shallow=False)
    remove_tree(dest)
    settle()
    if not ok:
        raise AssertionError("dmg's copy differs from the source")
    return {"seconds": seconds, "mb_per_s": size / 1e6 / seconds, "verified": "byte-compare",
            "run": summary, "samples": sampler.samples, "hwm_reset": reset,
            "processes": [{"pid": pid, **vars(p)} for pid, p in sorted(sampler.peaks.items())],
            "sum_rss_peak": sampler.sum_rss_peak, "sum_pss_peak": sampler.sum_pss_peak,
            "pool_rss_peak": sampler.pool_rss_peak, "pool_pss_peak": sampler.pool_pss_peak}


def run_rclone(work: Path, source_dir: Path, *, size: int, interval: float) -> dict[str, Any]:
    rclone = tool_path("rclone")
    if rclone is None:
        return {"error": "rclone is not installed (apt-get install rclone)"}
    dest = work / "out-rclone"
    conf = work / "rclone.conf"
    conf.touch()
    timer = "/usr/bin/time" if Path("/usr/bin/time").exists() else None
    args = [rclone, "copy", "--config", str(conf), str(source_dir), str(dest)]
    if timer:
        args = [timer, "-v", *args]
    settle()
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)

    def rclone_pids() -> dict[int, str]:
        if not timer:
            return {proc.pid: "rclone"}
        with contextlib.suppress(psutil.Error):
            return {p.pid: "rclone" for p in psutil.Process(proc.pid).children()}
        return {}

    with Sampler(rclone_pids, interval) as sampler:
        _out, err = proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"rclone exited {proc.returncode}: {err.strip()[-300:]}")
    maxrss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    copied = (dest / "big.bin").stat().st_size
    remove_tree(dest)
    settle()
    if copied != size:
        raise AssertionError(f"rclone copied {copied} bytes, expected {size}")
    peak = max((p.rss_peak for p in sampler.peaks.values()), default=0)
    pss = max((p.pss_peak for p in sampler.peaks.values()), default=0)
    return {"seconds": seconds, "mb_per_s": size / 1e6 / seconds, "verified": "size",
            "rss_peak_sampled": peak, "pss_peak_sampled": pss,
            "maxrss_kernel": int(maxrss.group(1)) * 1024 if maxrss else None,
            "version": tool_version([rclone, "version"])}


# -- report ---------------------------------------------------------------------------
def mib(n: int | None) -> str:
    return "-" if not n else f"{n / MIB:.0f}"


def report(result: dict[str, Any]) -> None:
    dmg, rclone = result["dmg"], result["rclone"]
    print(f"peak memory copying one {result['size_gib']:g} GiB file, file -> file "
          f"(sampled every {result['interval']} s; MiB)")
    print(f"  machine: {result['machine']}, load after: {result['load_avg_after']}")
    print()
    print(f"{'process':<30} {'idle RSS':>9} {'peak RSS':>9} {'peak PSS':>9} {'VmHWM':>9} {'HWM-idle':>9}")
    print("-" * 80)
    for p in dmg["processes"]:
        grew = f"{(p['hwm'] - p['rss_idle']) / MIB:.0f}" if p["hwm"] else "-"
        print(f"{'dmg ' + p['label']:<30} {mib(p['rss_idle']):>9} {mib(p['rss_peak']):>9} "
              f"{mib(p['pss_peak']):>9} {mib(p['hwm']):>9} {grew:>9}")
    print(f"{'dmg pool children, summed':<30} {'':>9} {mib(dmg['pool_rss_peak']):>9} "
          f"{mib(dmg['pool_pss_peak']):>9}")
    print(f"{'dmg node, summed':<30} {'':>9} {mib(dmg['sum_rss_peak']):>9} {mib(dmg['sum_pss_peak']):>9}")
    if "error" in rclone:
        print(f"{'rclone':<30} {rclone['error']}")
    else:
        print(f"{'rclone copy':<30} {'':>9} {mib(rclone['rss_peak_sampled']):>9} "
              f"{mib(rclone['pss_peak_sampled']):>9} {mib(rclone['maxrss_kernel']):>9}")
    print()
    print(f"dmg:    {dmg['seconds']:.2f} s, {dmg['mb_per_s']:.0f} MB/s ({dmg['verified']}), "
          f"{dmg['run']['shards']} shard(s) {dmg['run']['shards_per_node']}, {dmg['samples']} samples")
    if "error" not in rclone:
        print(f"rclone: {rclone['seconds']:.2f} s, {rclone['mb_per_s']:.0f} MB/s ({rclone['verified']})")
    peak_pss = dmg["sum_pss_peak"]
    if "error" not in rclone and rclone.get("maxrss_kernel"):
        print(f"ratio dmg node summed PSS / rclone max RSS: {peak_pss / rclone['maxrss_kernel']:.2f}")


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose dmg summed PSS is the median (the lower one of an even count)."""
    ordered = sorted(runs, key=lambda r: r["dmg"]["sum_pss_peak"])
    return ordered[(len(ordered) - 1) // 2]


def report_medians(runs: list[dict[str, Any]]) -> None:
    def med(values: list[float]) -> float:
        return statistics.median(values) if values else 0.0

    dmg = [r["dmg"] for r in runs]
    by_label: dict[str, list[float]] = {}
    for d in dmg:
        for p in d["processes"]:
            by_label.setdefault(p["label"], []).append(p["pss_peak"])
    print()
    print(f"medians of {len(runs)} repeats (MiB, s):")
    for label, values in by_label.items():
        print(f"  dmg {label:<32} peak PSS {med(values) / MIB:6.1f}")
    print(f"  dmg node, summed PSS peak        {med([d['sum_pss_peak'] for d in dmg]) / MIB:6.1f}  "
          f"(repeats: {', '.join(mib(d['sum_pss_peak']) for d in dmg)})")
    print(f"  dmg seconds                      {med([d['seconds'] for d in dmg]):6.2f}")
    rclone = [r["rclone"] for r in runs if "error" not in r["rclone"]]
    if rclone:
        print(f"  rclone max RSS                   "
              f"{med([float(r.get('maxrss_kernel') or 0) for r in rclone]) / MIB:6.1f}")
        print(f"  rclone seconds                   {med([r['seconds'] for r in rclone]):6.2f}")
    print(f"  load before each repeat: {', '.join(str(r['machine']['load_avg'][0]) for r in runs)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gib", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=None, help="node slots (default: sized)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between samples")
    parser.add_argument("--repeat", type=int, default=1, help="runs of both copies; medians shown")
    parser.add_argument("--tmp", type=Path, default=None, help="where the temp dir goes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = int(args.size_gib * GIB)
    tmp_parent = args.tmp or Path(tempfile.gettempdir())
    check_free_space(tmp_parent, 2 * size)

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dmg-bench-rss-", dir=tmp_parent) as tmp:
        work = Path(tmp)
        source_dir = work / "src"
        print(f"writing {args.size_gib:g} GiB of random bytes in {source_dir} ...", file=sys.stderr)
        write_random_file(source_dir / "big.bin", size)
        for _ in range(max(1, args.repeat)):
            warm_cache(source_dir)
            settle()
            result: dict[str, Any] = {"size_gib": args.size_gib, "interval": args.interval,
                                      "machine": machine()}
            result["dmg"] = run_dmg(work, source_dir, size=size, concurrency=args.concurrency,
                                    interval=args.interval)
            try:
                result["rclone"] = run_rclone(work, source_dir, size=size, interval=args.interval)
            except (RuntimeError, AssertionError) as exc:
                result["rclone"] = {"error": str(exc)}
            result["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
            runs.append(result)
    if args.json:
        print(json.dumps(runs[0] if len(runs) == 1 else runs, indent=2))
        return 0
    report(median_run(runs))
    if len(runs) > 1:
        report_medians(runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
