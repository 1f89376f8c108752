"""The live progress bar of ``dmg pipeline run --wait``: files and bytes done / total, throughput.

Totals are what is left to copy: the planner's counts minus the files the
workers skipped as already up to date, so a finished run ends at 100 %. The
fraction is by bytes when sizes are known, else by files (SQL tables have no
size until read). Throughput is measured over the last 10 s of polls (the
average since the start until then). On a terminal, rich draws it (:class:`dmg.cli.livebar.LiveBar`,
imported only there);
piped, it is one plain line per change (:func:`bar_line`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from dmg.cli.output import duration_between, human_bytes, human_duration
from dmg.shards.status import CLOUD_FINISHED


def totals(run: dict[str, Any]) -> dict[str, int]:
    """``{files, files_total, bytes, bytes_total, shards, shards_done}`` over the run's shards."""
    shards = [s for a in run.get("activity_runs") or [] for s in a.get("shards") or []]
    out = {"files": 0, "files_total": 0, "bytes": 0, "bytes_total": 0, "shards": len(shards),
           "shards_done": sum(1 for s in shards if s.get("status") in CLOUD_FINISHED)}
    for shard in shards:
        for key in ("files", "files_total", "bytes", "bytes_total"):
            out[key] += int(shard.get(key) or 0)
    return out


def fraction(counts: dict[str, int], *, done: bool = False) -> float:
    """How much of the run is done, 0..1 (1 when it ended with nothing to copy)."""
    if counts["bytes_total"] > 0:
        part = counts["bytes"] / counts["bytes_total"]
    elif counts["files_total"] > 0:
        part = counts["files"] / counts["files_total"]
    else:
        part = 1.0 if done else 0.0
    return max(0.0, min(1.0, part))


def bar(part: float, width: int = 24) -> str:
    filled = round(part * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


class RateMeter:
    """Bytes/s over the last ``window`` seconds of samples; None until they span that long.

    Workers report progress in batches (every few files), so the bytes done jump
    rather than grow: a rate between two successive polls showed a whole batch
    over one poll interval (42 MB/s on a run throttled to 8 MB/s). Over a window
    of several batches the figure is what the run really does; until the
    samples span a window, :func:`bar_line` shows the average since the start.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, window: float = 10.0) -> None:
        self._clock = clock
        self._window = window
        self._samples: deque[tuple[float, int]] = deque()
        self.rate: float | None = None

    def sample(self, nbytes: int) -> float | None:
        now = self._clock()
        self._samples.append((now, nbytes))
        # keep one sample at or before the window's start, so the span covers it
        while len(self._samples) > 2 and self._samples[1][0] <= now - self._window:
            self._samples.popleft()
        first_at, first_bytes = self._samples[0]
        if now - first_at >= self._window:
            self.rate = max(0.0, (nbytes - first_bytes) / (now - first_at))
        return self.rate


def progress_figures(run: dict[str, Any], meter: RateMeter | None = None) -> tuple[float, list[str]]:
    """How much is done (0..1) and the figures shown after the bar: files, bytes, rate,
    shards, elapsed time, and the status once it is no longer InProgress."""
    counts = totals(run)
    status = str(run.get("status") or "?")
    done = status in ("Succeeded", "Failed", "Cancelled")
    part = fraction(counts, done=done)
    elapsed = duration_between(run.get("started_at") or run.get("created_at"), run.get("ended_at"))
    rate = meter.sample(counts["bytes"]) if meter is not None else None
    if (rate is None or done) and elapsed:
        rate = counts["bytes"] / elapsed
    parts = [f"{counts['files']}/{counts['files_total']} files",
             f"{human_bytes(counts['bytes'])}/{human_bytes(counts['bytes_total'])}",
             f"{rate / 1e6:.1f} MB/s" if rate is not None else "- MB/s",
             f"{counts['shards_done']}/{counts['shards']} shards",
             human_duration(elapsed)]
    if status != "InProgress":
        parts.append(status)
    return part, parts


def bar_line(run: dict[str, Any], meter: RateMeter | None = None) -> str:
    """``[#########-----]  42%  120/300 files  1.2 GiB/2.5 GiB  35.2 MB/s  1/2 shards  12.3 s``
    (the plain line printed when stderr is not a terminal)."""
    part, parts = progress_figures(run, meter)
    return "  ".join([f"{bar(part)} {part * 100:3.0f}%", *parts])
