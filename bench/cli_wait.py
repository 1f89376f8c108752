"""Benchmark: what a user waits for — ``dmg pipeline run NAME --wait`` of one small file
vs ``rclone copy`` of the same file, on an idle site.

Usage: ``bench/cli_wait.py [--kib 1] [--repeat 3] [--nodes 2] [--tmp DIR] [--json]``

Both commands run as subprocesses, timed by wall clock from spawn to exit (Python's
start-up and the CLI's imports count for dmg, as they do for the user). Each dmg run is
split in three phases that add up to its wall time, from the cloud's own records (same
machine, same clock): the CLI's start (spawn → the run created at the cloud: Python, the
imports, the request), the run itself (``created_at`` → ``ended_at``) and the end seen
(``ended_at`` → the CLI's exit: the long-poll's answer, the summary printed, the exit);
and each command's own CPU time (user + system, from ``getrusage``), which a loaded
machine bends far less than the wall clock.
The load average is printed: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import DmgCopier, dmg_site, tool_path  # noqa: E402


def children_cpu() -> float:
    """User + system CPU seconds of this process's ended children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(args: list[str], *, env: dict[str, str]) -> tuple[float, float, float]:
    """Run ``args``: its wall-clock seconds (spawn to exit), its CPU seconds (user + system:
    unlike the wall clock, hardly bent by a loaded machine) and when it was spawned (POSIX)."""
    cpu = children_cpu()
    spawned = time.time()
    start = time.perf_counter()
    done = subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {done.stderr.decode(errors='replace')[-400:]}")
    return seconds, children_cpu() - cpu, spawned


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kib", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--tmp", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import tempfile

    rclone = tool_path("rclone")
    dmg = str(Path(sys.executable).with_name("dmg"))
    with tempfile.TemporaryDirectory(prefix="dmg-cliwait-", dir=args.tmp) as tmp:
        work = Path(tmp)
        source = work / "src"
        source.mkdir()
        (source / "one.bin").write_bytes(os.urandom(args.kib * 1024))
        (work / "rclone.conf").touch()
        samples: dict[str, list[float]] = {"rclone": [], "dmg": []}
        cpu: dict[str, list[float]] = {"rclone": [], "dmg": []}
        own: list[float] = []
        after_end: list[float] = []
        start_up: list[float] = []
        with dmg_site(work / "site", nodes=args.nodes, concurrency=None) as site:
            site.wait_nodes_online(timeout=60)
            copier = DmgCopier(site)
            copier.store("src", "file", str(source))
            copier.store("dst", "file", str(work / "dst-dmg"))
            copier.copy("one", "src", "dst")  # creates the pipeline, warms the site (not timed)
            env = dict(os.environ, DMG_CLOUD_URL=site.settings.cloud_url,
                       DMG_API_TOKEN=site.settings.api_token, DMG_DATA_DIR=str(work / "cli"))
            for i in range(args.repeat):
                time.sleep(1.0)  # idle site: the previous run's reports are done
                if rclone:
                    wall, used, _ = timed([rclone, "copy", "--config", str(work / "rclone.conf"),
                                        str(source), str(work / f"dst-rclone-{i}")], env=env)
                    samples["rclone"].append(wall)
                    cpu["rclone"].append(used)
                time.sleep(0.5)
                wall, used, spawned = timed([dmg, "pipeline", "run", "one", "--wait"], env=env)
                samples["dmg"].append(wall)
                cpu["dmg"].append(used)
                exited = time.time()
                with site.client() as client:
                    last = client.list_runs(limit=1)[0]
                own.append(float(last["ended_at"]) - float(last["created_at"]))
                start_up.append(float(last["created_at"]) - spawned)
                after_end.append(exited - float(last["ended_at"]))
        load = os.getloadavg()
    medians = {tool: statistics.median(v) for tool, v in samples.items() if v}
    cpu_medians = {tool: statistics.median(v) for tool, v in cpu.items() if v}
    result = {"kib": args.kib, "repeat": args.repeat, "load": [round(x, 2) for x in load],
              "samples": samples, "median": medians, "cpu": cpu, "cpu_median": cpu_medians,
              "dmg_cli_start": start_up, "dmg_cli_start_median": statistics.median(start_up),
              "dmg_run_itself": own,
              "dmg_run_itself_median": statistics.median(own), "dmg_exit_after_run_end": after_end,
              "dmg_exit_after_run_end_median": statistics.median(after_end)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; one {args.kib} KiB file, "
              f"{args.repeat} repeats, median s")
        for tool, value in medians.items():
            print(f"  {tool:8s} {value:.3f}  {[round(s, 3) for s in samples[tool]]}; "
                  f"its CPU (user+sys) {cpu_medians[tool]:.3f}")
        print(f"  dmg's start (spawn -> the run created at the cloud): {statistics.median(start_up):.3f}  "
              f"{[round(s, 3) for s in start_up]}")
        print(f"  the dmg run itself (created -> ended in the cloud): {statistics.median(own):.3f}  "
              f"{[round(s, 3) for s in own]}")
        print(f"  dmg's exit after the run ended (the cloud's ended_at -> exit): "
              f"{statistics.median(after_end):.3f}  {[round(s, 3) for s in after_end]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
