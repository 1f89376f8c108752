"""Benchmark: the node's own cost of a copy, per file and per byte, without the site around it.

    .venv/bin/python bench/engine_cost.py [--count 5000 --kib 8] [--large-count 4 --large-mib 256]
        [--repeat 3] [--tmp /dev/shm]

:func:`dmg.transfer.copy_entries` (what a worker runs for a shard; file → file, fenced by a
check that waits 0.2 ms as a Redis round trip does, default options) in this process, next
to ``cp -r`` and ``rclone copy`` of the same folders in the same run. CPU is user + system
time (``getrusage``; the tools' as children). ``checks`` counts the fencing checks. Medians
of ``--repeat`` runs; the load average is printed: other processes share the machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from dmg.connectors.base import StoreSpec
from dmg.connectors.file import FileConnector
from dmg.transfer import CopyOptions, copy_entries


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _measure(fn: Callable[[Path], int], dest: Path) -> tuple[float, float, int]:
    who = resource.RUSAGE_SELF if fn.__name__ == "dmg" else resource.RUSAGE_CHILDREN
    cpu0, wall0 = _cpu(who), time.monotonic()
    checks = fn(dest)
    return time.monotonic() - wall0, _cpu(who) - cpu0, checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--kib", type=int, default=8)
    parser.add_argument("--large-count", type=int, default=4)
    parser.add_argument("--large-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tmp", type=Path, default=None)
    args = parser.parse_args()
    rclone = shutil.which("rclone")
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="dmg-bench-engine-", dir=args.tmp) as tmp:
        work = Path(tmp)
        (work / "rclone.conf").touch()
        sets = {"small": (args.count, args.kib * 1024), "large": (args.large_count, args.large_mib << 20)}
        print(f"{'dataset':8} {'tool':7} {'seconds':>8} {'CPU s':>7} {'CPU us/file':>12} {'checks':>7}")
        for name, (count, size) in sets.items():
            if count <= 0:
                continue
            src = work / name
            for i in range(count):
                folder = src / f"d{i // 100:03d}"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"f{i:05d}").write_bytes(os.urandom(size))
            subprocess.run(["cat", *map(str, src.rglob("f*"))], stdout=subprocess.DEVNULL, check=True)

            def dmg(dest: Path, src: Path = src) -> int:
                dest.mkdir()
                source = FileConnector(StoreSpec("src", "file", str(src)))
                sink = FileConnector(StoreSpec("dst", "file", str(dest)))
                checks = [0]

                def may_commit() -> bool:
                    checks[0] += 1
                    time.sleep(0.0002)
                    return True

                result = copy_entries(source, sink, list(source.list("")), source_prefix="", sink_prefix="",
                                      staging_id="bench.1", may_commit=may_commit,
                                      options=CopyOptions.from_json({}))
                assert result.copied == len(result.files), [f.error for f in result.failed][:3]
                return checks[0]

            def cp(dest: Path, src: Path = src) -> int:
                subprocess.run(["cp", "-r", str(src), str(dest)], check=True)
                return 0

            def rclone_copy(dest: Path, src: Path = src) -> int:
                config = str(work / "rclone.conf")
                subprocess.run([str(rclone), "copy", "--config", config, str(src), str(dest)], check=True)
                return 0

            tools: list[tuple[str, Callable[[Path], int]]] = [("cp", cp), ("dmg", dmg)]
            if rclone:
                tools.insert(1, ("rclone", rclone_copy))
            for tool, fn in tools:
                runs = []
                for i in range(args.repeat):
                    dest = work / f"out-{tool}-{i}"
                    subprocess.run(["sync"], check=True)
                    runs.append(_measure(fn, dest))
                    shutil.rmtree(dest)
                wall = statistics.median(r[0] for r in runs)
                cpu = statistics.median(r[1] for r in runs)
                print(f"{name:8} {tool:7} {wall:8.2f} {cpu:7.2f} {cpu / count * 1e6:12.0f} {runs[0][2]:7d}",
                      flush=True)
            shutil.rmtree(src)
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
