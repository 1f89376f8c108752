"""The attempt lifecycle (workers.run.attempt) with a body of our own, against a real Redis.

Given a shard whose attempt 1 began on node ``dead`` and left staging, and attempt 2 on
``b``, when attempt 2 runs a body that succeeds, is fenced, is cancelled or crashes, then
the lifecycle reports and ends it in the documented order: running first; leftovers
removed before the final report only for a staging body; the final report before
``mark_finished``; a fenced attempt finished without a final report. At INFO an attempt
writes one line, its end, which says how long it ran (its start is a DEBUG line).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dmg.connectors import connector_for
from dmg.errors import Cancelled, StaleAttempt
from dmg.shards import ShardOutcome, ShardSpec
from dmg.shards.status import (
    OUTCOME_CANCELLED,
    OUTCOME_FAILED,
    OUTCOME_STALE,
    OUTCOME_SUCCEEDED,
    STATE_DONE,
    STATE_FAILED,
)
from dmg.site import scripts
from dmg.site.attempts import TaskResult
from dmg.site.state import SiteState
from tests.sitekit import beat
from tests.workers.support import file_store, shard_spec, write_files
from tests.workers.test_leftovers import SHARD, arrange, staging
from workers.run.attempt import Attempt, AttemptBody, Done, FinalResult, run_attempt
from workers.run.delivery import NextStart, activity_run_of, my_runner, next_start
from workers.run.outbox import OutboxReporter, ReportOutbox
from workers.run.reporter import MemoryReporter, ShortShardReporter


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


def run_with(state: SiteState, reporter: MemoryReporter | ShortShardReporter, body: StubBody, *,
             final_result: FinalResult | None = None) -> Any:
    def body_for(_spec: ShardSpec, _run: Attempt) -> AttemptBody:
        return body

    return run_attempt(SHARD, 2, node="b", state=state, reporter=reporter, connector_factory=connector_for,
                       body_for=body_for, clock=lambda: 1000.0, final_result=final_result)


class KeptResult:
    """A :class:`FinalResult` storing the task result under ``key``; records what it was asked."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.asked: list[ShardOutcome] = []
        self.was_stored = False

    def entry(self, outcome: ShardOutcome) -> TaskResult | None:
        self.asked.append(outcome)
        return self.key, json.dumps(outcome.task_result()), 60

    def stored(self) -> None:
        self.was_stored = True


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


def test_an_attempt_writes_one_info_line_its_end_with_its_seconds(
        tmp_path: Path, state: SiteState, caplog: pytest.LogCaptureFixture) -> None:
    arrange(tmp_path, state)
    ticks = iter([1000.0, 1000.25])  # started_at, ended_at

    def body_for(_spec: ShardSpec, _run: Attempt) -> AttemptBody:
        return StubBody(succeed, stages=False)

    with caplog.at_level(logging.DEBUG, logger="workers.run.attempt"):
        run_attempt(SHARD, 2, node="b", state=state, reporter=MemoryReporter(),
                    connector_factory=connector_for, body_for=body_for, clock=lambda: next(ticks))

    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "workers.run.attempt"]
    assert [m for level, m in lines if level >= logging.INFO] == [
        f"shard succeeded shard={SHARD} attempt=2 node=b files=2 bytes=200 seconds=0.250"]
    assert [m.split(" shard=")[0] for level, m in lines if level == logging.DEBUG] == ["shard started"]


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


def outbox_reporter(state: SiteState, node: str = "b") -> ShortShardReporter:
    """The node's own reporter chain (workers.context): held running report, outbox first."""
    return ShortShardReporter(OutboxReporter(MemoryReporter(), ReportOutbox(state, node), queue_first=True),
                              delay=30.0)


def outbox_entries(state: SiteState, node: str = "b") -> list[tuple[str, str]]:
    return [(e["shard_id"], e["report"]["status"])
            for e in map(json.loads, state.redis.lrange(state.keys.outbox(node), 0, -1))]


def test_the_final_report_the_bytes_and_the_finish_are_one_redis_step(
        tmp_path: Path, state: SiteState) -> None:
    """Given the node's outbox reporter, when a short attempt succeeds, then its final report
    alone is in the outbox (the held running one dropped), its bytes are counted, it is
    finished, and the outbox's sender and the dispatcher are woken."""
    arrange(tmp_path, state)

    outcome = run_with(state, outbox_reporter(state), StubBody(succeed, stages=False))

    assert outcome.status == OUTCOME_SUCCEEDED
    assert outbox_entries(state) == [(SHARD, "succeeded")]
    assert (state.shard(SHARD) or {})["state"] == STATE_DONE and state.started("b") == set()
    assert state.moved("b") == (200, 200)
    assert state.redis.llen(state.keys.outbox_wake("b")) == 1 and state.redis.llen(state.keys.wake) == 1


@pytest.mark.parametrize("streamed", [True, False])
def test_an_attempt_that_streamed_its_file_results_asks_the_sender_to_flush_after_its_end(
        tmp_path: Path, state: SiteState, streamed: bool) -> None:
    """Given the node's outbox reporter, when an attempt whose earlier reports carried file
    results ends, then its final report is queued and the sender is asked to flush (it may be
    letting reports gather); a short attempt's end (its only report) asks nothing."""
    arrange(tmp_path, state)

    outcome = run_with(state, outbox_reporter(state),
                       StubBody(lambda: Done(True, 2, 200, (2, 200), streamed=streamed), stages=False))

    assert outcome.status == OUTCOME_SUCCEEDED
    assert outbox_entries(state) == [(SHARD, "succeeded")]
    assert state.redis.llen(state.keys.outbox_flush("b")) == int(streamed)


@pytest.mark.parametrize("ok", [True, False])
def test_a_succeeded_attempt_s_task_result_is_stored_in_its_last_step(tmp_path: Path, state: SiteState,
                                                                     ok: bool) -> None:
    """Given the node's outbox reporter and a task result to store with the end, when the
    attempt succeeds, then its task result (what the task returns) is stored in the same step
    and the task is told so; when it fails, nothing is stored there (Celery stores it)."""
    arrange(tmp_path, state)
    final = KeptResult("result-of-2")
    body = StubBody(succeed if ok else lambda: Done(False, 0, 0, (2, 200), "no"), stages=False)

    outcome = run_with(state, outbox_reporter(state), body, final_result=final)

    assert (state.shard(SHARD) or {})["state"] == (STATE_DONE if ok else STATE_FAILED)
    if ok:
        assert final.asked == [outcome] and final.was_stored
        assert json.loads(state.redis.get("result-of-2")) == outcome.task_result()
        assert 0 < state.redis.ttl("result-of-2") <= 60
    else:
        assert final.asked == [] and not final.was_stored and state.redis.get("result-of-2") is None


def test_a_fenced_attempt_ending_in_one_step_leaves_the_newer_attempt_s_sets(tmp_path: Path,
                                                                          state: SiteState) -> None:
    """Given attempt 2 of the shard fenced by attempt 3 on the same node while its body ran,
    when it ends failed, then its report is queued but the node's running set and the
    shard's state stay the newer attempt's (MARK_FINISHED's rule, in the one-step end)."""
    arrange(tmp_path, state)

    def fenced_meanwhile() -> Done:
        assert state.new_attempt(SHARD, "b") == 3
        return Done(False, 0, 0, (2, 200), "1 of 2 files failed")

    run_with(state, outbox_reporter(state), StubBody(fenced_meanwhile, stages=False))

    assert outbox_entries(state) == [(SHARD, "failed")]
    shard = state.shard(SHARD) or {}
    assert shard["attempt"] == 3 and shard["state"] not in (STATE_DONE, STATE_FAILED)
    assert state.started("b") == set()  # attempt 2's staging id is no longer listed


@pytest.mark.parametrize("shard_id", [SHARD, "odd.id"])
def test_a_shard_of_a_run_cancelled_before_it_started_ends_cancelled(tmp_path: Path, state: SiteState,
                                                                     shard_id: str) -> None:
    """Given a run cancelled while its shard was queued, when the shard starts, then it ends
    cancelled with a failed report, whether the start script could look at the flag (a
    shard id of the usual form) or not (any other id: one more look)."""
    write_files(tmp_path / "src" / "in", {"a.bin": 100})
    spec = shard_spec(shard_id, file_store("src", tmp_path / "src"), "in",
                      file_store("dst", tmp_path / "dst"), "out")
    spec["activity_run_id"] = "run1"
    state.save_shard(shard_id, spec)
    beat(state, "b", 1)
    assert state.new_attempt(shard_id, "b") == 1
    state.cancel("run1")
    reporter = MemoryReporter()

    outcome = run_attempt(shard_id, 1, node="b", state=state, reporter=reporter,
                          connector_factory=connector_for,
                          body_for=lambda *_: StubBody(succeed, stages=False),
                          clock=lambda: 1000.0)

    assert outcome.status == OUTCOME_CANCELLED
    assert reporter.statuses(shard_id) == ["failed"]
    assert not (tmp_path / "dst" / "out").exists()


def test_the_start_says_whether_the_run_is_cancelled(tmp_path: Path, state: SiteState) -> None:
    arrange(tmp_path, state)
    begun = state.begin_run(SHARD, 2, "b", runner="1@1.000", alive=lambda _t: False, activity_run_id="run1")
    assert (begun.outcome, begun.cancelled) == ("started", False)
    assert activity_run_of(SHARD) == "run1" and activity_run_of("odd.id") == ""


def test_the_start_reads_the_cancel_flag_and_the_limit_in_one_command(state: SiteState) -> None:
    """Given runs cancelled or not, with a limit or not, when an attempt of each starts, then
    its answer says both, read in one MGET (no EXISTS, no GET)."""
    runs = (("run1", True, 0), ("run2", True, 4096), ("run3", False, 512), ("run4", False, 0))
    for run, cancel, limit in runs:
        shard = f"{run}-00000"
        state.save_shard(shard, {"shard_id": shard})
        attempt = state.new_attempt(shard, "b")
        if cancel:
            state.cancel(run)
        if limit:
            state.set_bandwidth(run, limit)
        before = _calls(state, "mget", "exists", "get")
        begun = state.begin_run(shard, attempt, "b", runner="1@1.000", alive=lambda _t: False,
                                activity_run_id=run)
        after = _calls(state, "mget", "exists", "get")
        assert (begun.outcome, begun.cancelled, begun.bandwidth) == ("started", cancel, str(limit or ""))
        assert {c: after[c] - before[c] for c in after} == {"mget": 1, "exists": 0, "get": 0}


def _calls(state: SiteState, *commands: str) -> dict[str, int]:
    stats = state.redis.info("commandstats")
    return {c: int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in commands}


def test_the_start_reads_the_run_s_bandwidth_limit_for_the_first_throttle_read(
        tmp_path: Path, state: SiteState) -> None:
    """Given a run with a bandwidth limit set, when an attempt starts, then the start's answer
    carries the limit and the shard's first throttle read takes it from there (no read of its
    own: a change made in between shows at the next read), once."""
    from dmg.transfer.sitebandwidth import SiteBandwidth

    arrange(tmp_path, state)
    state.set_bandwidth("run1", 4096)
    begun = state.begin_run(SHARD, 2, "b", runner="1@1.000", alive=lambda _t: False, activity_run_id="run1")
    assert (begun.outcome, begun.bandwidth) == ("started", "4096")
    state.set_bandwidth("run1", 8192)  # changed after the start
    control = SiteBandwidth(state, "run1", default=100)
    assert control.current_limit() == 4096  # the start's read
    assert control.current_limit() == 8192  # then Redis again
    assert SiteBandwidth(state, "other", default=100).current_limit() == 100


def test_a_start_long_ago_or_of_another_run_is_not_taken_as_the_limit(tmp_path: Path,
                                                                      state: SiteState) -> None:
    arrange(tmp_path, state)
    state.begin_run(SHARD, 2, "b", runner="1@1.000", alive=lambda _t: False, activity_run_id="run1")
    assert state.bandwidth_at_start("run2", within=1.0) == (False, None)
    assert state.bandwidth_at_start("run1", within=1.0) == (False, None)  # once only, even asked wrongly
    state.begin_run(SHARD, 2, "b", runner="1@1.000", alive=lambda _t: False, activity_run_id="run1")
    assert state.bandwidth_at_start("run1", within=0.0) == (False, None)  # too old


def _two_carried_shards(tmp_path: Path, state: SiteState) -> tuple[str, str]:
    """Two small shards of run ``run7`` placed on ``b`` (attempt 1 each), as a packed message
    carries them: the second is in ``carried:b``."""
    write_files(tmp_path / "src" / "in", {"a.bin": 10})
    beat(state, "b", 1)
    first, second = "run7-00000", "run7-00001"
    for shard_id in (first, second):
        state.save_shard(shard_id, shard_spec(shard_id, file_store("src", tmp_path / "src"), "in",
                                              file_store("dst", tmp_path / "dst"), f"out-{shard_id}"))
        assert state.new_attempt(shard_id, "b") == 1
    state.redis.sadd(state.keys.carried("b"), second)
    return first, second


def _run_carried(state: SiteState, shard_id: str, *, started: NextStart | None = None,
                 then_start: NextStart | None = None) -> ShardOutcome:
    return run_attempt(shard_id, 1, node="b", state=state, reporter=outbox_reporter(state),
                       connector_factory=connector_for, body_for=lambda *_: StubBody(succeed, stages=False),
                       clock=lambda: 1000.0, carried=True, started=started, then_start=then_start)


def test_a_packed_message_s_next_shard_starts_in_the_round_trip_that_ends_the_one_before(
        tmp_path: Path, state: SiteState) -> None:
    """Given two shards a packed message carries, when the first ends with the second's start
    asked (``then_start``), then that one round trip ends the first and starts the second
    (running on ``b`` in this process, one delivery, out of ``carried:b``), and the second,
    handed that start, runs and ends with no start of its own."""
    first, second = _two_carried_shards(tmp_path, state)
    chained = next_start(state, second, 1, "b")
    for source in (scripts.START_RUN, scripts.FINISH_RUN, scripts.FINISH_THEN_START):
        state.redis.script_load(source)  # no NOSCRIPT answer counted below

    calls = _calls(state, "evalsha")["evalsha"]
    assert _run_carried(state, first, then_start=chained).status == OUTCOME_SUCCEEDED
    assert _calls(state, "evalsha")["evalsha"] - calls == 2  # its start; its end with the next start
    shard = state.shard(second) or {}
    assert (shard["state"], shard["runner"], str(shard["deliveries"])) == ("running", my_runner(), "1")
    assert state.running("b") == {second} and state.carried("b") == set()
    assert (state.shard(first) or {})["state"] == STATE_DONE

    calls = _calls(state, "evalsha")["evalsha"]
    assert _run_carried(state, second, started=chained).status == OUTCOME_SUCCEEDED
    assert _calls(state, "evalsha")["evalsha"] - calls == 1  # its end only
    shard = state.shard(second) or {}
    assert (shard["state"], str(shard["deliveries"])) == (STATE_DONE, "1")
    assert outbox_entries(state) == [(first, "succeeded"), (second, "succeeded")]
    assert state.running("b") == set() and state.queued("b") == set()


def test_a_next_shard_fenced_before_the_end_of_the_one_before_is_stale_and_the_end_stands(
        tmp_path: Path, state: SiteState) -> None:
    """Given two carried shards, the second given a newer attempt elsewhere while the first
    runs, when the first ends with the second's start asked, then the first's end is recorded
    and the second's start is refused (stale): it writes nothing, reports nothing, and leaves
    the newer attempt's node and sets alone."""
    first, second = _two_carried_shards(tmp_path, state)
    beat(state, "c", 1)
    chained = next_start(state, second, 1, "b")

    def fenced_meanwhile() -> Done:
        assert state.new_attempt(second, "c") == 2
        return succeed()

    outcome = run_attempt(first, 1, node="b", state=state, reporter=outbox_reporter(state),
                          connector_factory=connector_for,
                          body_for=lambda *_: StubBody(fenced_meanwhile, stages=False),
                          clock=lambda: 1000.0, carried=True, then_start=chained)

    assert outcome.status == OUTCOME_SUCCEEDED and (state.shard(first) or {})["state"] == STATE_DONE
    assert _run_carried(state, second, started=chained).status == OUTCOME_STALE
    shard = state.shard(second) or {}
    assert (shard["node"], str(shard["attempt"]), shard["runner"]) == ("c", "2", "")
    assert state.queued("c") == {second} and state.running("b") == set()
    assert outbox_entries(state) == [(first, "succeeded")]
    assert not (tmp_path / "dst" / f"out-{second}").exists()
