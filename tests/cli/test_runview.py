"""What `dmg pipeline run --wait`, `dmg runs show` and `dmg demo` print about a run."""

from __future__ import annotations

from typing import Any

from dmg.cli.output import column, human_bytes, render_table
from dmg.cli.runview import progress_line, shard_rows, summary


def run_body(status: str = "Succeeded") -> dict[str, Any]:
    return {"id": "r1", "pipeline": "p", "gateway": "g", "status": status, "created_at": 100.0,
            "started_at": 100.0, "ended_at": 104.0, "activity_runs": [{
                "id": "a1", "name": "copy", "status": status, "files": 3, "bytes": 3_000_000,
                "started_at": 100.0, "ended_at": 104.0, "shards": [
                    {"index": 0, "status": "succeeded", "node": "node1", "attempt": 1, "files": 2,
                     "bytes": 2_000_000, "started_at": 100.5, "ended_at": 102.0},
                    {"index": 1, "status": "running" if status != "Succeeded" else "succeeded",
                     "node": "node2", "attempt": 2, "files": 1, "bytes": 1_000_000,
                     "started_at": 101.0, "ended_at": 103.0}]}]}


def test_summary_counts_nodes_files_bytes_and_rate() -> None:
    totals = summary(run_body())
    assert totals == {"status": "Succeeded", "nodes": ["node1", "node2"], "files": 3, "bytes": 3_000_000,
                      "seconds": 4.0, "mb_per_s": 0.75}


def test_shard_rows_carry_node_attempt_and_duration() -> None:
    rows = shard_rows(run_body())
    assert [(r["shard"], r["node"], r["attempt"], r["duration"]) for r in rows] == [
        (0, "node1", 1, 1.5), (1, "node2", 2, 2.0)]


def test_progress_line_while_running() -> None:
    line = progress_line(run_body("InProgress"))
    assert line.startswith("InProgress: 1/2 shards done, 1 running, 3 files")


def test_table_aligns_columns_and_marks_blanks() -> None:
    text = render_table([{"a": "x", "b": None}, {"a": "longer", "b": 2048}],
                        [column("A", "a"), column("SIZE", "b", human_bytes)])
    assert text.splitlines() == ["A       SIZE", "x       -", "longer  2.0 KiB"]
