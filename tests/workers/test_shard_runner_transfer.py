"""run_shard with the copy engine's options: incremental skips shrink the totals,
bad options fail the shard, the activity's bandwidth applies, file results ride
along with the reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dmg.connectors import Entry
from dmg.shards import ShardSpec
from dmg.shards.status import OUTCOME_FAILED, OUTCOME_SUCCEEDED
from dmg.site.state import SiteState
from tests.workers.support import file_store, shard_spec, tree, write_files
from workers.run.reporter import MemoryReporter
from workers.run.shard import run_shard

SHARD = "ar9-00000"


def prepare(state: SiteState, tmp_path: Path, *, options: dict[str, Any] | None = None,
            entries: list[Entry] | None = None) -> tuple[Path, Path]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_files(src / "in", {"a.bin": 1000, "b.bin": 2000, "c.log": 10})
    state.save_shard(SHARD, shard_spec(SHARD, file_store("src", src), "in", file_store("dst", dst), "out",
                                       options=options, entries=entries))
    return src, dst


def results(reporter: MemoryReporter) -> list[dict[str, Any]]:
    return [f for _s, r in reporter.reports for f in r.get("file_results", [])]


def test_a_rerun_skips_every_file_and_ends_at_full_progress(state: SiteState, tmp_path: Path) -> None:
    prepare(state, tmp_path)
    run_shard(SHARD, state.new_attempt(SHARD, "a"), node="a", state=state, reporter=MemoryReporter())
    reporter = MemoryReporter()

    outcome = run_shard(SHARD, state.new_attempt(SHARD, "a"), node="a", state=state, reporter=reporter)

    assert outcome.status == OUTCOME_SUCCEEDED and (outcome.files, outcome.bytes) == (0, 0)
    final = reporter.reports[-1][1]
    assert (final["files"], final["files_total"], final["bytes"], final["bytes_total"]) == (0, 0, 0, 0)
    assert sorted((f["path"], f["status"], f["attempt"], f["node"]) for f in results(reporter)) == [
        ("out/a.bin", "skipped", 2, "a"), ("out/b.bin", "skipped", 2, "a"), ("out/c.log", "skipped", 2, "a")]


def test_filters_and_overwrite_options_apply(state: SiteState, tmp_path: Path) -> None:
    _src, dst = prepare(state, tmp_path, options={"exclude": ["*.log"], "overwrite": "always"})
    reporter = MemoryReporter()

    outcome = run_shard(SHARD, state.new_attempt(SHARD, "a"), node="a", state=state, reporter=reporter)

    assert outcome.status == OUTCOME_SUCCEEDED and outcome.files == 2
    assert sorted(tree(dst / "out")) == ["a.bin", "b.bin"]
    assert [f["status"] for f in results(reporter)] == ["copied", "copied"]


def test_a_bad_option_fails_the_shard_clearly(state: SiteState, tmp_path: Path) -> None:
    _src, dst = prepare(state, tmp_path, options={"overwrite": "sometimes"})
    reporter = MemoryReporter()

    outcome = run_shard(SHARD, state.new_attempt(SHARD, "a"), node="a", state=state, reporter=reporter)

    assert outcome.status == OUTCOME_FAILED and "option 'overwrite' is 'sometimes'" in outcome.error
    assert reporter.statuses(SHARD) == ["running", "failed"] and not (dst / "out").exists()


def test_a_failed_file_is_in_the_report_with_its_error(state: SiteState, tmp_path: Path) -> None:
    entries = [Entry("in/a.bin", 1000, 0.0), Entry("in/gone.bin", 5, 0.0)]
    prepare(state, tmp_path, entries=entries)
    reporter = MemoryReporter()

    outcome = run_shard(SHARD, state.new_attempt(SHARD, "a"), node="a", state=state, reporter=reporter)

    assert outcome.status == OUTCOME_FAILED
    failed = [f for f in results(reporter) if f["status"] == "failed"]
    assert [f["path"] for f in failed] == ["out/gone.bin"] and "gone.bin" in failed[0]["error"]


def test_the_activity_bandwidth_option_paces_the_shard(state: SiteState, tmp_path: Path) -> None:
    prepare(state, tmp_path, options={"bandwidth": "64M"})
    reporter = MemoryReporter()
    outcome = run_shard(SHARD, state.new_attempt(SHARD, "a"), node="a", state=state, reporter=reporter)
    assert outcome.status == OUTCOME_SUCCEEDED
    assert state.redis.exists(state.keys.pacing("ar9"))  # bytes were booked on the run's schedule


def test_entries_of_unknown_size_count_zero_bytes_and_hints_are_read() -> None:
    body = {"shard_id": "s-1", "source": {"store": {"name": "db", "type": "sql", "location": "sqlite://"}},
            "sink": {"store": {"name": "f", "type": "file", "location": "/x"}},
            "entries": [{"path": "t1", "size": -1, "mtime": 1.0},
                        {"path": "t2", "size": 10, "mtime": 1.0, "sink": None},
                        {"path": "t3", "size": 5, "mtime": 1.0,
                         "sink": {"path": "o/t3", "size": 5, "mtime": 2}}]}
    spec = ShardSpec.from_json(body)
    assert spec.bytes_total == 15 and spec.files_total == 3
    assert spec.sink_hints == {"t2": None, "t3": Entry("o/t3", 5, 2.0)}
