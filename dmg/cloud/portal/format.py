"""How the portal writes figures: sizes, rates, times and durations (Jinja2 filters)."""

from __future__ import annotations

import time
from typing import Any

RUN_ENDED = ("Succeeded", "Failed", "Cancelled")


def human_bytes(value: float | None) -> str:
    if value is None:
        return ""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"


def ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    seconds = max(0.0, now - ts)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def when(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def duration(start: float | None, end: float | None) -> str:
    if start is None or end is None:
        return ""
    return f"{end - start:.1f} s"


def rate(size: float | None, start: float | None, end: float | None) -> str:
    """``12.3 MB/s`` over ``start``..``end``; blank when unknown."""
    if not size or start is None or end is None or end <= start:
        return ""
    return f"{size / (end - start) / 1e6:.1f} MB/s"


def status_class(status: str) -> str:
    """The CSS class of a status badge: its first word."""
    return status.split(" ")[0]


def part_done(activity: dict[str, Any]) -> float:
    """0..1 of the bytes (else files) of an activity run done."""
    files, files_total = activity.get("files") or 0, activity.get("files_total") or 0
    size, size_total = activity.get("bytes") or 0, activity.get("bytes_total") or 0
    if size_total > 0:
        part = size / size_total
    elif files_total > 0:
        part = files / files_total
    else:
        part = 1.0 if activity["status"] in RUN_ENDED else 0.0
    return max(0.0, min(1.0, part))


FILTERS = {"bytes": human_bytes, "when": when, "status_class": status_class}
