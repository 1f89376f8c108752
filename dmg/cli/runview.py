"""Watching and showing a run: progress lines, per-shard tables, the summary.

A run, as the cloud returns it (:meth:`dmg.cloud.client.CloudClient.run`), holds
its activity runs and their shards; times are POSIX seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from dmg.cli.echo import echo
from dmg.cli.output import (
    column,
    computed,
    duration_between,
    echo_table,
    human_bytes,
    human_duration,
    to_epoch,
)
from dmg.cli.progressbar import RateMeter, bar_line
from dmg.errors import NotFound, Retryable
from dmg.shards.status import CLOUD_FAILED, CLOUD_FINISHED, CLOUD_RUNNING, CLOUD_SUCCEEDED

if TYPE_CHECKING:
    from dmg.cli.livebar import LiveBar
    from dmg.cloud.client import CloudClient

RUN_DONE = ("Succeeded", "Failed", "Cancelled")


def is_done(run: dict[str, Any]) -> bool:
    return str(run.get("status")) in RUN_DONE


def shards_of(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for a in run.get("activity_runs") or [] for s in a.get("shards") or []]


def progress_line(run: dict[str, Any]) -> str:
    """``InProgress: 5/12 shards done, 1 running, 140 files, 20.3 MiB, 4.2 s``."""
    shards = shards_of(run)
    done = sum(1 for s in shards if s.get("status") in CLOUD_FINISHED)
    running = sum(1 for s in shards if s.get("status") == CLOUD_RUNNING)
    failed = sum(1 for s in shards if s.get("status") == CLOUD_FAILED)
    files = sum(int(s.get("files") or 0) for s in shards)
    size = sum(int(s.get("bytes") or 0) for s in shards)
    elapsed = duration_between(run.get("started_at") or run.get("created_at"), run.get("ended_at"))
    parts = [f"{run.get('status', '?')}: {done}/{len(shards)} shards done"]
    if running:
        parts.append(f"{running} running")
    if failed:
        parts.append(f"{failed} failed")
    parts += [f"{files} files", human_bytes(size), human_duration(elapsed)]
    return ", ".join(parts)


#: How long one long-poll of the run may last while a progress line is shown (s): the
#: line is refreshed at least this often; without one, the cloud's limit.
PROGRESS_EVERY = 1.0
LONG_POLL = 25.0


def next_state(client: CloudClient, run_id: str, *, seen: str, wait: float) -> dict[str, Any]:
    """The run once its status is no longer ``seen`` (``""``: at once), or after ``wait`` s
    (``GET /runs/{id}/wait``, the cloud's long-poll). Raises Retryable, NotFound."""
    run: dict[str, Any] = client.request("GET", f"/runs/{quote(run_id, safe='')}/wait",
                                         params={"status": seen, "timeout": round(wait, 3)},
                                         timeout=wait + 10)
    return run


def wait_for_run(client: CloudClient, run_id: str, *, poll: float = 0.5, timeout: float | None = None,
                 on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Follow the run until it ends; returns its last state.

    Long-polls the cloud (:func:`next_state`): the call returns as soon as the run's
    status changes, so the end is seen within tens of milliseconds; with
    ``on_progress`` it also returns every :data:`PROGRESS_EVERY` s to refresh the
    progress line. A cloud that is briefly unreachable is retried every ``poll`` s;
    TimeoutError after ``timeout`` s.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = ""
    long_poll = True
    while True:
        wait = PROGRESS_EVERY if on_progress is not None else LONG_POLL
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - time.monotonic()))
        try:
            if long_poll:
                run: dict[str, Any] | None = next_state(client, run_id, seen=seen, wait=wait)
            else:
                run = client.run(run_id)
        except Retryable:
            run = None
        except NotFound:
            if not long_poll:
                raise
            client.run(run_id)  # NotFound again: the run is unknown
            long_poll = False  # a cloud older than the long-poll: poll every ``poll`` s
            continue
        if run is not None:
            seen = str(run.get("status") or "")
            if on_progress is not None:
                on_progress(run)
            if is_done(run):
                return run
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"run {run_id} did not end within {timeout:.0f} s")
        if run is None or not long_poll:
            time.sleep(poll)


class ProgressPrinter:
    """A live bar on a terminal (rich, :class:`dmg.cli.livebar.LiveBar`); a plain line
    per change otherwise."""

    def __init__(self) -> None:
        self._live: LiveBar | None = None
        if sys.stderr.isatty():
            from dmg.cli.livebar import LiveBar

            self._live = LiveBar()
        self._last = ""
        self._meter = RateMeter()

    def __call__(self, run: dict[str, Any]) -> None:
        line = progress_line(run)
        if self._live is not None:
            self._live.update(run, self._meter)
        elif line.split(", ")[:3] != self._last.split(", ")[:3]:
            echo(bar_line(run, self._meter), err=True)
        self._last = line

    def finish(self) -> None:
        if self._live is not None:
            self._live.stop()


def shard_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per shard, tagged with its activity run, for a table or JSON."""
    rows = []
    for activity in run.get("activity_runs") or []:
        for shard in activity.get("shards") or []:
            rows.append({
                "activity": activity.get("name"), "activity_status": activity.get("status"),
                "shard": shard.get("index"), "status": shard.get("status"), "node": shard.get("node"),
                "attempt": shard.get("attempt"), "files": shard.get("files"), "bytes": shard.get("bytes"),
                "duration": duration_between(shard.get("started_at"), shard.get("ended_at"))
                if shard.get("started_at") else None,
                "error": shard.get("error") or "",
            })
    return rows


SHARD_COLUMNS = [
    column("ACTIVITY", "activity"), column("SHARD", "shard"), column("STATUS", "status"),
    column("NODE", "node"), column("ATTEMPT", "attempt"), column("FILES", "files"),
    column("BYTES", "bytes", human_bytes), column("DURATION", "duration", human_duration),
    computed("ERROR", lambda r: str(r.get("error") or "")[:80]),
]


def clock_time(value: Any) -> str:
    """``HH:MM:SS.s`` local time (attempts of one run are seconds apart), "-" for none."""
    epoch = to_epoch(value)
    if epoch is None:
        return "-"
    stamp = datetime.fromtimestamp(epoch)
    return f"{stamp:%H:%M:%S}.{stamp.microsecond // 100_000}"


def _ended(row: dict[str, Any]) -> str:
    how = str(row.get("outcome") or "")
    if not how:
        return f"({row.get('status') or 'placed'})"  # still open
    error = str(row.get("error") or "")
    return f"{how}: {error[:80]}" if error and how in ("failed", "cancelled") else how


ATTEMPT_COLUMNS = [
    column("ACTIVITY", "activity"), column("SHARD", "shard_index"), column("ATTEMPT", "attempt"),
    column("NODE", "node"), column("PLACED", "placed_at", clock_time),
    column("STARTED", "started_at", clock_time), column("ENDED", "ended_at", clock_time),
    column("RAN", "duration", human_duration), computed("HOW IT ENDED", _ended),
]


def print_attempts(attempts: list[dict[str, Any]]) -> None:
    """Every attempt of every shard, oldest first per shard (``dmg runs show --attempts``)."""
    echo("")
    if not attempts:
        echo("attempts: none reported yet")
        return
    echo("attempts:")
    echo_table(attempts, ATTEMPT_COLUMNS)


def summary(run: dict[str, Any]) -> dict[str, Any]:
    """Nodes used, files, bytes, seconds and MB/s (10^6 bytes) of a run."""
    shards = shards_of(run)
    files = sum(int(s.get("files") or 0) for s in shards)
    size = sum(int(s.get("bytes") or 0) for s in shards)
    nodes = sorted({str(s["node"]) for s in shards if s.get("node") and s.get("status") == CLOUD_SUCCEEDED})
    seconds = duration_between(run.get("started_at") or run.get("created_at"), run.get("ended_at")) or 0.0
    return {"status": run.get("status"), "nodes": nodes, "files": files, "bytes": size,
            "seconds": round(seconds, 3), "mb_per_s": round(size / 1e6 / seconds, 2) if seconds else None}


def print_run(run: dict[str, Any]) -> None:
    """The run's header, its activity runs and a table of every shard."""
    echo(f"run {run.get('id')}  pipeline {run.get('pipeline')}  gateway {run.get('gateway')}  "
               f"status {run.get('status')}")
    for activity in run.get("activity_runs") or []:
        line = (f"  activity {activity.get('name')}: {activity.get('status')}, "
                f"{activity.get('files') or 0} files, {human_bytes(activity.get('bytes') or 0)}, "
                f"{human_duration(duration_between(activity.get('started_at'), activity.get('ended_at')))}")
        echo(line)
        if activity.get("error"):
            echo(f"    error: {activity['error']}")
    rows = shard_rows(run)
    if rows:
        echo("")
        echo_table(rows, SHARD_COLUMNS)
    totals = summary(run)
    rate = f"{totals['mb_per_s']} MB/s" if totals["mb_per_s"] is not None else "-"
    echo("")
    echo(f"nodes used: {', '.join(totals['nodes']) or '-'}; files: {totals['files']}; "
               f"bytes: {totals['bytes']} ({human_bytes(totals['bytes'])}); "
               f"seconds: {totals['seconds']:.1f}; throughput: {rate}")
