"""Benchmark: file → file copies through the dmg gateway vs ``cp -r`` and ``rclone copy``.

    .venv/bin/python bench/copy_local.py [--large-count 4 --large-mib 256] [--small-count 10000
        --small-kib 8] [--nodes 2] [--repeat 1] [--tools cp,rclone,dmg] [--json] [--phases]

Two datasets of random bytes, generated once in a temp dir: ``large`` (4 files of
256 MiB, 1 GiB) and ``small`` (10,000 files of 8 KiB in folders of 100). Each tool
copies each dataset to a fresh folder on the same disk, in the same run:

* ``cp``: ``cp -r SRC DST``;
* ``rclone``: ``rclone copy SRC DST`` (defaults: 4 transfers, 8 checkers, hash check);
* ``dmg``: an embedded site (Redis, cloud, ``--nodes`` nodes, no Flower), one pipeline
  with one activity ``file`` store → ``file`` store; the clock runs from
  ``run_pipeline`` to the cloud reporting the run Succeeded (site start not timed).

``--phases`` prints, for dmg, the median seconds of each phase of a run (claim,
listing and planning, start, copy, the end's reports, the client's wait; see
``common.PHASES``) and the time one listing of the source alone takes.

The source is read once before the first tool (warm page cache for all); dirty pages
are written back (``sync``, untimed) before each tool. Each output is checked (file
count and bytes; dmg's byte for byte) and then deleted.
"""

from __future__ import annotations

import functools
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    KIB,
    MIB,
    Dataset,
    DmgCopier,
    Row,
    check_free_space,
    copy_arguments,
    dmg_site,
    emit,
    format_phases,
    list_seconds,
    machine,
    make_large,
    make_small,
    measure,
    node_limits,
    remove_tree,
    run_timed,
    settle,
    tool_path,
    tool_version,
    verify_tree,
    warm_cache,
)

TOOLS = ("cp", "rclone", "dmg")
GOALS = [("rclone", "large", 1.0), ("rclone", "small", 1.0), ("cp", "large", 1 / 1.1)]


def main() -> int:
    args, tools = copy_arguments(__doc__.split("\n\n")[0], TOOLS)
    rclone = tool_path("rclone")

    large_bytes = args.large_count * args.large_mib * MIB
    small_bytes = args.small_count * args.small_kib * KIB
    tmp_parent = args.tmp or Path(tempfile.gettempdir())
    check_free_space(tmp_parent, 2 * (large_bytes + small_bytes))

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="dmg-bench-local-", dir=tmp_parent) as tmp:
        work = Path(tmp)
        print(f"generating data in {work} ...", file=sys.stderr)
        datasets = [make_large(work / "src" / "large", count=args.large_count, size=args.large_mib * MIB),
                    make_small(work / "src" / "small", count=args.small_count, size=args.small_kib * KIB)]
        warm_cache(*(d.root for d in datasets))
        settle()
        (work / "rclone.conf").touch()
        out = work / "out"
        out.mkdir()
        meta = {"machine": machine(), "nodes": args.nodes, "repeat": args.repeat,
                "versions": {"rclone": tool_version([rclone or "rclone", "version"]),
                             "cp": tool_version(["cp", "--version"])},
                "cache": "warm (source read once before the first tool)"}

        def copy_with(tool: str, dataset: Dataset, copier: DmgCopier | None, i: int) -> tuple[float, str]:
            dest = out / f"{tool}-{dataset.name}-{i}"
            settle()
            try:
                if tool == "cp":
                    seconds = run_timed(["cp", "-r", str(dataset.root), str(dest)])
                elif tool == "rclone":
                    seconds = run_timed([str(rclone), "copy", "--config", str(work / "rclone.conf"),
                                         str(dataset.root), str(dest)])
                else:
                    assert copier is not None
                    dest.mkdir()
                    source = copier.store(f"src-{dataset.name}", "file", str(dataset.root))
                    sink = copier.store(f"dst-{dataset.name}-{i}", "file", str(dest))
                    seconds, summary = copier.copy(f"{dataset.name}-{i}", source, sink)
                    rows[-1].extra.setdefault("runs", []).append(summary)
                return seconds, verify_tree(dataset, dest, byte_compare=tool == "dmg")
            finally:
                remove_tree(dest)
                settle()

        def run_all(copier: DmgCopier | None) -> None:
            for dataset in datasets:
                for tool in tools:
                    rows.append(Row(tool, dataset.name, dataset.files, dataset.bytes))
                    measure(rows[-1], functools.partial(copy_with, tool, dataset, copier),
                            repeat=args.repeat)
                    if tool == "dmg" and args.phases and dataset.files:
                        rows[-1].extra["listing_seconds"] = list_seconds(dataset.root)

        if "dmg" in tools:
            with dmg_site(work / "dmg-data", nodes=args.nodes, concurrency=args.concurrency,
                          tls=args.tls) as site:
                meta["node_slots"] = node_limits(site)
                run_all(DmgCopier(site))
        else:
            run_all(None)

    title = (f"file -> file, same disk: large = {args.large_count} x {args.large_mib} MiB, "
             f"small = {args.small_count} x {args.small_kib} KiB")
    emit(rows, title=title, meta=meta, goals=[g for g in GOALS if g[0] in tools and "dmg" in tools],
         as_json=args.json)
    if args.phases:
        print(format_phases(rows))
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
