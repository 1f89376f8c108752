"""How the CLI prints: tables (rich, :mod:`dmg.cli.tables`), JSON, human sizes, durations, times."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from dmg.cli.echo import echo

Column = tuple[str, str, Callable[[dict[str, Any]], str]]


def column(header: str, key: str, fmt: Callable[[Any], str] | None = None) -> Column:
    """A table column showing ``row[key]`` (through ``fmt``; blank when absent)."""

    def cell(row: dict[str, Any]) -> str:
        value = row.get(key)
        if value is None or value == "":
            return "-"
        return fmt(value) if fmt else str(value)

    return (header, key, cell)


def computed(header: str, fn: Callable[[dict[str, Any]], str]) -> Column:
    return (header, "", fn)


def render_table(rows: Iterable[dict[str, Any]], columns: Sequence[Column], *,
                 terminal: bool = False, width: int | None = None) -> str:
    """Left-aligned columns separated by two spaces, a header line first (drawn by rich,
    :mod:`dmg.cli.tables`; plain text unless ``terminal``)."""
    from dmg.cli.tables import draw

    headers = [header for header, _, _ in columns]
    cells = [[fn(row) for _, _, fn in columns] for row in rows]
    return draw(headers, cells, terminal=terminal, width=width)


def echo_table(rows: Iterable[dict[str, Any]], columns: Sequence[Column]) -> None:
    """Print a table on stdout: bold headers and the terminal's width on a terminal,
    plain text when piped."""
    terminal = sys.stdout.isatty()
    echo(render_table(rows, columns, terminal=terminal))


def emit_json(value: Any) -> None:
    echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def emit_table(rows: list[dict[str, Any]], columns: Sequence[Column], *, as_json: bool,
               empty: str = "") -> None:
    if as_json:
        emit_json(rows)
    elif not rows and empty:
        echo(empty)
    else:
        echo_table(rows, columns)


def human_bytes(value: Any) -> str:
    try:
        size = float(value)
    except (TypeError, ValueError):
        return str(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - the loop always returns


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def to_epoch(value: Any) -> float | None:
    """A timestamp the cloud sent (epoch seconds or ISO 8601) as epoch seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.timestamp()


def duration_between(start: Any, end: Any, *, now: float | None = None) -> float | None:
    """Seconds from ``start`` to ``end`` (to ``now`` while still running)."""
    began = to_epoch(start)
    if began is None:
        return None
    ended = to_epoch(end)
    if ended is None:
        ended = time.time() if now is None else now
    return max(0.0, ended - began)


def human_time(value: Any) -> str:
    epoch = to_epoch(value)
    if epoch is None:
        return str(value) if value else "-"
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def human_ago(value: Any, *, now: float | None = None) -> str:
    epoch = to_epoch(value)
    if epoch is None:
        return "never" if not value else str(value)
    ago = max(0.0, (time.time() if now is None else now) - epoch)
    return f"{human_duration(ago)} ago"


def human_percent(value: Any) -> str:
    try:
        return f"{float(value):.0f}%"
    except (TypeError, ValueError):
        return str(value)


def reasons_text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "; ".join(str(v) for v in value) or "-"
    return str(value) if value else "-"
