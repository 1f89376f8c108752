"""run_shard against real Redis and real file stores, with an in-memory reporter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dmg.connectors import Entry
from dmg.shards.status import OUTCOME_FAILED, OUTCOME_STALE, OUTCOME_SUCCEEDED, STATE_DONE, STATE_FAILED
from dmg.site.state import SiteState
from tests.workers.support import file_store, shard_spec, tree, write_files
from workers.run.reporter import MemoryReporter
from workers.run.shard import run_shard

SHARD = "ar1-00000"


@pytest.fixture
def stores(tmp_path: Path) -> tuple[Any, Any, Path, Path]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_files(src / "in", {"a.bin": 70_000, "sub/b.bin": 1_500_000, "c.txt": 0})
    return file_store("src", src), file_store("dst", dst), src, dst


def test_a_current_attempt_copies_every_file_and_reports(state: SiteState, stores: Any) -> None:
    source, sink, src, dst = stores
    state.save_shard(SHARD, shard_spec(SHARD, source, "in", sink, "out"))
    attempt = state.new_attempt(SHARD, "a")
    reporter = MemoryReporter()

    outcome = run_shard(SHARD, attempt, node="a", state=state, reporter=reporter)

    assert outcome.status == OUTCOME_SUCCEEDED
    assert (outcome.files, outcome.bytes) == (3, 1_570_000)
    assert tree(dst / "out") == tree(src / "in")
    assert reporter.statuses(SHARD) == ["running", "succeeded"]
    final = reporter.reports[-1][1]
    assert final["node"] == "a" and final["attempt"] == attempt
    assert final["files"] == final["files_total"] == 3
    assert final["bytes"] == final["bytes_total"] == 1_570_000
    assert final["ended_at"] >= final["started_at"] and final["error"] == ""
    shard = state.shard(SHARD)
    assert shard is not None and shard["state"] == STATE_DONE
    assert state.running("a") == set() and state.queued("a") == set()


def test_a_stale_attempt_does_nothing(state: SiteState, stores: Any) -> None:
    source, sink, _src, dst = stores
    state.save_shard(SHARD, shard_spec(SHARD, source, "in", sink, "out"))
    old = state.new_attempt(SHARD, "a")
    state.new_attempt(SHARD, "a")
    reporter = MemoryReporter()

    outcome = run_shard(SHARD, old, node="a", state=state, reporter=reporter)

    assert outcome.status == OUTCOME_STALE
    assert reporter.reports == []
    assert not (dst / "out").exists()
    assert state.queued("a") == {SHARD}  # the newer attempt still counts on the node


def test_an_unknown_shard_is_stale(state: SiteState) -> None:
    reporter = MemoryReporter()
    assert run_shard("nope-00000", 1, node="a", state=state, reporter=reporter).status == OUTCOME_STALE
    assert reporter.reports == []


def test_an_attempt_fenced_while_copying_commits_nothing(state: SiteState, stores: Any) -> None:
    source, sink, _src, dst = stores
    state.save_shard(SHARD, shard_spec(SHARD, source, "in", sink, "out"))
    attempt = state.new_attempt(SHARD, "a")

    def fence_when_running(shard_id: str, report: dict[str, Any]) -> None:
        if report["status"] == "running":
            state.new_attempt(shard_id, "b")  # the dispatcher moved the shard

    reporter = MemoryReporter(on_report=fence_when_running)
    outcome = run_shard(SHARD, attempt, node="a", state=state, reporter=reporter)

    assert outcome.status == OUTCOME_STALE
    assert reporter.statuses(SHARD) == ["running"]  # the newer attempt owns the final status
    assert tree(dst) == {}  # neither targets nor staging leftovers
    assert state.running("a") == set()
    assert state.queued("b") == {SHARD}
    shard = state.shard(SHARD)
    assert shard is not None and shard["state"] == "queued" and shard["node"] == "b"


def test_a_missing_source_file_fails_the_shard_with_its_path(state: SiteState, stores: Any) -> None:
    source, sink, _src, dst = stores
    entries = [Entry("in/a.bin", 70_000, 0.0), Entry("in/gone.bin", 10, 0.0)]
    state.save_shard(SHARD, shard_spec(SHARD, source, "in", sink, "out", entries=entries))
    attempt = state.new_attempt(SHARD, "a")
    reporter = MemoryReporter()

    outcome = run_shard(SHARD, attempt, node="a", state=state, reporter=reporter)

    assert outcome.status == OUTCOME_FAILED
    assert "1 of 2 files failed" in outcome.error and "gone.bin" in outcome.error
    assert reporter.statuses(SHARD) == ["running", "failed"]
    assert reporter.reports[-1][1]["error"] == outcome.error
    assert (dst / "out" / "a.bin").exists()
    shard = state.shard(SHARD)
    assert shard is not None and shard["state"] == STATE_FAILED
    assert state.running("a") == set()


def test_an_unknown_store_type_fails_the_shard(state: SiteState, stores: Any) -> None:
    source, sink, _src, _dst = stores
    spec = shard_spec(SHARD, source, "in", sink, "out")
    spec["sink"]["store"]["type"] = "tape"
    state.save_shard(SHARD, spec)
    attempt = state.new_attempt(SHARD, "a")
    reporter = MemoryReporter()

    outcome = run_shard(SHARD, attempt, node="a", state=state, reporter=reporter)

    assert outcome.status == OUTCOME_FAILED
    assert "unknown type 'tape'" in outcome.error
    assert reporter.statuses(SHARD) == ["running", "failed"]


def test_progress_is_reported_while_copying(state: SiteState, stores: Any) -> None:
    source, sink, _src, _dst = stores
    state.save_shard(SHARD, shard_spec(SHARD, source, "in", sink, "out"))
    attempt = state.new_attempt(SHARD, "a")
    reporter = MemoryReporter()

    run_shard(SHARD, attempt, node="a", state=state, reporter=reporter, progress_interval=0)

    statuses = reporter.statuses(SHARD)
    assert statuses[-1] == "succeeded" and set(statuses[:-1]) == {"running"} and len(statuses) >= 3
    progress = [r["files"] for s, r in reporter.reports[:-1]]
    assert progress == sorted(progress) and progress[0] == 0 and progress[-1] >= 1
    sent = [f["path"] for _s, r in reporter.reports for f in r.get("file_results", [])]
    assert sorted(sent) == ["out/a.bin", "out/c.txt", "out/sub/b.bin"]  # each file reported once


def test_a_malformed_spec_fails_the_shard_with_one_clear_line(state: SiteState) -> None:
    state.save_shard(SHARD, {"shard_id": SHARD, "source": "src"})  # a spec no planner writes
    attempt = state.new_attempt(SHARD, "a")
    reporter = MemoryReporter()

    outcome = run_shard(SHARD, attempt, node="a", state=state, reporter=reporter)

    assert outcome.status == OUTCOME_FAILED
    assert outcome.error.startswith("shard source is malformed (expected an object, got str)")
    assert "\n" not in outcome.error
    assert reporter.statuses(SHARD) == ["failed"]
    assert reporter.reports[-1][1]["error"] == outcome.error
    shard = state.shard(SHARD)
    assert shard is not None and shard["state"] == STATE_FAILED
    assert state.queued("a") == set() and state.running("a") == set()
