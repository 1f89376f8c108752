"""A copy shard's file results leave the node while it copies (workers.run.copy).

Given shards of various sizes, then a report goes as soon as half as many results wait as
the shard has files still to come (at least 64, at most 500): few reports, the last few
results in the final one; and given a shard's progress counter, then each report carries exactly the
results gathered since the last, in order, none twice.
"""

from __future__ import annotations

from dmg.transfer import COPIED, FileResult
from workers.run.copy import MIN_STREAMED_RESULTS
from workers.run.progress import MAX_PENDING_RESULTS, Progress
from workers.run.reporter import MemoryReporter


def _streamed(files: int) -> tuple[list[int], int, list[str]]:
    """A copy shard's progress over ``files`` results: (results per report, results left for
    the final report, every path in the order it left)."""
    reporter = MemoryReporter()
    progress = Progress(reporter, "s-1", {"node": "n1", "attempt": 2}, (files, files), interval=3600,
                        clock=lambda: 0.0, max_pending=MAX_PENDING_RESULTS, min_pending=MIN_STREAMED_RESULTS)
    for i in range(files):
        progress.file_done(FileResult(f"f{i:05d}", 1, "c", COPIED))
    sent = [[f["path"] for f in report["file_results"]] for _shard, report in reporter.reports]
    left = [f["path"] for f in progress.take_pending()]
    return [len(batch) for batch in sent], len(left), [p for batch in sent for p in batch] + left


def test_a_shard_s_results_go_in_reports_of_a_third_of_what_is_left_within_the_bounds() -> None:
    assert (MIN_STREAMED_RESULTS, MAX_PENDING_RESULTS) == (64, 500)
    # given a shard of 1,250 files (one of 8 on 10,000): 7 reports, not 15 of 79
    sizes, final, order = _streamed(1250)
    assert (sizes, final) == ([417, 278, 185, 123, 82, 64, 64], 37)
    assert order == [f"f{i:05d}" for i in range(1250)]
    # a long shard: at most 500 a report, then shrinking; the final report carries fewer than 64
    sizes, final, order = _streamed(10_000)
    assert sizes == [500] * 18 + [333, 222, 148, 99, 66, 64, 64] and final == 4
    assert order == [f"f{i:05d}" for i in range(10_000)]
    # a small shard: nothing streams below 64 results
    assert _streamed(63)[:2] == ([], 63)
    assert _streamed(100)[:2] == ([64], 36)


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
