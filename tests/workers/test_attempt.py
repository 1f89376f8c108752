"""The attempt lifecycle (workers.run.attempt) with a body of our own, against a real Redis.

Given a shard whose attempt 1 began on node ``dead`` and left staging, and attempt 2 on
``b``, when attempt 2 runs a body that succeeds, is fenced, is cancelled or crashes, then
the lifecycle reports and ends it in the documented order: running first; leftovers
removed before the final report only for a staging body; the final report before
``mark_finished``; a fenced attempt finished without a final report.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dmg.connectors import connector_for
from dmg.errors import Cancelled, StaleAttempt
from dmg.shards import ShardSpec
from dmg.shards.status import (
    OUTCOME_CANCELLED,
    OUTCOME_FAILED,
    OUTCOME_STALE,
    OUTCOME_SUCCEEDED,
    STATE_DONE,
    STATE_FAILED,
)
from dmg.site.state import SiteState
from tests.workers.test_leftovers import SHARD, arrange, staging
from workers.run.attempt import Attempt, AttemptBody, Done, run_attempt
from workers.run.reporter import MemoryReporter


class StubBody:
    """An :class:`AttemptBody` whose ``run`` is given by the test."""

    def __init__(self, run: Callable[[], Done], *, stages: bool) -> None:
        self._run = run
        self.stages = stages

    def running_totals(self) -> tuple[int, int]:
        return 2, 200

    def run(self) -> Done:
        return self._run()

    def so_far(self) -> Done:
        return Done(False, 1, 100, (2, 200))


def run_with(state: SiteState, reporter: MemoryReporter, body: StubBody) -> Any:
    def body_for(_spec: ShardSpec, _run: Attempt) -> AttemptBody:
        return body

    return run_attempt(SHARD, 2, node="b", state=state, reporter=reporter, connector_factory=connector_for,
                       body_for=body_for, clock=lambda: 1000.0)


def succeed() -> Done:
    return Done(True, 2, 200, (2, 200))


@pytest.mark.parametrize("stages", [True, False])
def test_leftovers_go_before_the_final_report_which_goes_before_finished(
        tmp_path: Path, state: SiteState, stages: bool) -> None:
    root = arrange(tmp_path, state)
    seen: dict[str, Any] = {}

    def at_report(shard_id: str, report: dict[str, Any]) -> None:
        if report["status"] == "succeeded":
            seen["staging"] = staging(root)
            seen["state"] = (state.shard(shard_id) or {}).get("state")

    reporter = MemoryReporter(on_report=at_report)
    outcome = run_with(state, reporter, StubBody(succeed, stages=stages))

    assert outcome.status == OUTCOME_SUCCEEDED and (outcome.files, outcome.bytes) == (2, 200)
    assert reporter.statuses(SHARD) == ["running", "succeeded"]
    running = reporter.reports[0][1]
    assert (running["files_total"], running["bytes_total"]) == (2, 200)
    dead_staging = f".dmg-staging.{SHARD}.1.a.bin"
    assert (dead_staging in seen["staging"]) is not stages  # removed before the report, if staging
    assert seen["state"] != STATE_DONE  # marked finished only after the final report
    assert (state.shard(SHARD) or {})["state"] == STATE_DONE


def test_a_fenced_body_ends_stale_without_a_final_report(tmp_path: Path, state: SiteState) -> None:
    arrange(tmp_path, state)

    def fenced() -> Done:
        raise StaleAttempt("a newer attempt exists")

    reporter = MemoryReporter()
    outcome = run_with(state, reporter, StubBody(fenced, stages=True))

    assert outcome.status == OUTCOME_STALE and (outcome.files, outcome.bytes) == (1, 100)
    assert reporter.statuses(SHARD) == ["running"]
    assert state.started("b") == set()  # finished all the same
    assert state.started("dead") == {f"{SHARD}.1"}  # a fenced attempt cleans no one's leftovers


def test_a_cancelled_body_reports_failed_and_ends_cancelled(tmp_path: Path, state: SiteState) -> None:
    arrange(tmp_path, state)

    def cancelled() -> Done:
        raise Cancelled("the run was cancelled")

    reporter = MemoryReporter()
    outcome = run_with(state, reporter, StubBody(cancelled, stages=True))

    assert outcome.status == OUTCOME_CANCELLED
    assert reporter.statuses(SHARD) == ["running", "failed"]
    final = reporter.reports[-1][1]
    assert (final["files"], final["bytes"], final["error"]) == (1, 100, "the run was cancelled")
    assert (state.shard(SHARD) or {})["state"] == STATE_FAILED


def test_a_crashing_body_is_reported_failed_and_the_error_raised(tmp_path: Path, state: SiteState) -> None:
    arrange(tmp_path, state)

    def crash() -> Done:
        raise RuntimeError("boom")

    reporter = MemoryReporter()
    with pytest.raises(RuntimeError, match="boom"):
        run_with(state, reporter, StubBody(crash, stages=True))

    assert reporter.statuses(SHARD) == ["running", "failed"]
    assert reporter.reports[-1][1]["error"] == "internal error in the worker: RuntimeError"
    assert (state.shard(SHARD) or {})["state"] == STATE_FAILED


def test_a_failed_body_is_reported_failed(tmp_path: Path, state: SiteState) -> None:
    arrange(tmp_path, state)
    reporter = MemoryReporter()

    outcome = run_with(state, reporter, StubBody(lambda: Done(False, 1, 100, (2, 200), "1 of 2 files failed"),
                                                 stages=False))

    assert outcome.status == OUTCOME_FAILED and outcome.error == "1 of 2 files failed"
    assert reporter.statuses(SHARD) == ["running", "failed"]
