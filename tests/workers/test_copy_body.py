"""A copy shard's file results leave the node while it copies (workers.run.copy).

Given shards of various sizes, then a report goes as soon as about a sixteenth of the
shard's files (at least 64, at most 500) have results waiting; and given a shard's
progress counter, then each report carries exactly the results gathered since the last,
in order, none twice.
"""

from __future__ import annotations

from dmg.transfer import COPIED, FileResult
from workers.run.copy import MIN_STREAMED_RESULTS, streamed_results
from workers.run.progress import MAX_PENDING_RESULTS, Progress
from workers.run.reporter import MemoryReporter


def test_a_shard_s_results_go_in_about_sixteen_reports_within_the_bounds() -> None:
    assert streamed_results(0) == MIN_STREAMED_RESULTS == 64
    assert streamed_results(200) == 64
    assert streamed_results(1250) == 79
    assert streamed_results(2000) == 125
    assert streamed_results(1_000_000) == MAX_PENDING_RESULTS == 500


def test_progress_sends_each_result_once_in_reports_of_max_pending() -> None:
    reporter = MemoryReporter()
    progress = Progress(reporter, "s-1", {"node": "n1", "attempt": 2}, (150, 150), interval=3600,
                        clock=lambda: 0.0, max_pending=64)

    for i in range(150):
        progress.file_done(FileResult(f"f{i:03d}", 1, "c", COPIED))

    sent = [[f["path"] for f in report["file_results"]] for _shard, report in reporter.reports]
    assert [len(batch) for batch in sent] == [64, 64]
    left = [f["path"] for f in progress.take_pending()]
    assert [p for batch in sent for p in batch] + left == [f"f{i:03d}" for i in range(150)]
    stamps = {(r["node"], r["attempt"]) for _s, rep in reporter.reports for r in rep["file_results"]}
    assert stamps == {("n1", 2)}


def test_progress_says_it_streamed_once_a_report_carried_file_results() -> None:
    # given a shard's progress whose reports go every 64 results
    progress = Progress(MemoryReporter(), "s-1", {"node": "n1", "attempt": 2}, (100, 100), interval=3600,
                        clock=lambda: 0.0, max_pending=64)
    # when fewer results than that wait, then nothing streamed yet (the final report is the only one)
    for i in range(63):
        progress.file_done(FileResult(f"f{i:03d}", 1, "c", COPIED))
    assert not progress.streamed
    # when a report carried results, then it streamed (the attempt's end asks for a flush)
    progress.file_done(FileResult("f063", 1, "c", COPIED))
    assert progress.streamed
