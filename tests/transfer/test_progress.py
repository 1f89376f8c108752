"""The progress bar of `dmg pipeline run --wait`: done of total, throughput."""

from __future__ import annotations

from typing import Any

from dmg.cli.progressbar import RateMeter, bar, bar_line, fraction, totals


def run_body(status: str, shards: list[dict[str, Any]]) -> dict[str, Any]:
    return {"status": status, "created_at": 100.0, "started_at": 100.0,
            "ended_at": 110.0 if status != "InProgress" else None,
            "activity_runs": [{"name": "copy", "shards": shards}]}


def shard(status: str, files: int, files_total: int, size: int, size_total: int) -> dict[str, Any]:
    return {"status": status, "files": files, "files_total": files_total, "bytes": size,
            "bytes_total": size_total}


def test_the_bar_follows_bytes_then_files() -> None:
    body = run_body("InProgress", [shard("succeeded", 2, 2, 3_000_000, 3_000_000),
                                   shard("running", 1, 4, 1_000_000, 5_000_000)])
    counts = totals(body)
    assert counts == {"files": 3, "files_total": 6, "bytes": 4_000_000, "bytes_total": 8_000_000,
                      "shards": 2, "shards_done": 1}
    assert fraction(counts) == 0.5
    assert bar(0.5, width=10) == "[#####-----]"
    sql = totals(run_body("InProgress", [shard("running", 1, 4, 500, 0)]))  # sizes unknown
    assert fraction(sql) == 0.25
    assert fraction(totals(run_body("Succeeded", [])), done=True) == 1.0


def test_the_line_shows_counts_and_throughput_over_the_window() -> None:
    now = [0.0]
    meter = RateMeter(clock=lambda: now[0], window=2.0)
    first = run_body("InProgress", [shard("running", 1, 4, 1_000_000, 8_000_000)])
    second = run_body("InProgress", [shard("running", 2, 4, 5_000_000, 8_000_000)])

    bar_line(first, meter)
    now[0] = 2.0
    line = bar_line(second, meter)

    assert line.startswith("[###############---------]  62%")
    assert "2/4 files" in line and "4.8 MiB/7.6 MiB" in line and "2.0 MB/s" in line and "0/1 shards" in line


def test_batched_progress_shows_the_rate_over_the_window_not_one_batch_per_poll() -> None:
    # a run copying 8 MB/s whose workers report every 5 s (40 MB at once), polled each second
    now = [0.0]
    meter = RateMeter(clock=lambda: now[0], window=10.0)
    rates = []
    for second in range(31):
        now[0] = float(second)
        rates.append(meter.sample(40_000_000 * (second // 5)))
    assert rates[:10] == [None] * 10  # until the samples span the window: the caller's average
    assert all(r is not None and 6e6 <= r <= 10e6 for r in rates[10:]), rates


def test_a_young_run_shows_its_average_since_the_start() -> None:
    meter = RateMeter(clock=lambda: 0.0)
    body = run_body("InProgress", [shard("running", 1, 4, 4_000_000, 8_000_000)])
    body["ended_at"] = 102.0  # a fixed elapsed time of 2 s for the test
    assert "2.0 MB/s" in bar_line(body, meter)


def test_a_finished_run_shows_its_average_rate_and_status() -> None:
    line = bar_line(run_body("Succeeded", [shard("succeeded", 4, 4, 8_000_000, 8_000_000)]))
    assert "100%" in line and "0.8 MB/s" in line and line.endswith("Succeeded")


def test_on_a_terminal_rich_draws_the_bar_and_the_same_figures() -> None:
    import io

    from rich.console import Console

    from dmg.cli.livebar import LiveBar

    screen = io.StringIO()
    live = LiveBar(Console(file=screen, force_terminal=True, width=120, color_system="standard"))
    now = [0.0]
    meter = RateMeter(clock=lambda: now[0], window=2.0)
    live.update(run_body("InProgress", [shard("running", 1, 4, 1_000_000, 8_000_000)]), meter)
    now[0] = 2.0
    live.update(run_body("InProgress", [shard("running", 2, 4, 4_000_000, 8_000_000)]), meter)
    live.stop()
    text = screen.getvalue()
    assert "\x1b[" in text  # drawn in place, with colour
    assert "50%" in text and "2/4 files" in text and "1.5 MB/s" in text and "0/1 shards" in text
    assert "━" in text  # rich's bar, not the plain line's [####----]


def test_a_bar_that_never_started_stops_quietly() -> None:
    import io

    from rich.console import Console

    from dmg.cli.livebar import LiveBar

    screen = io.StringIO()
    LiveBar(Console(file=screen, force_terminal=True)).stop()
    assert screen.getvalue() == ""
