"""Small line charts as inline SVG, drawn on the server from a node's history.

No script and no chart library: each chart is a ``<svg>`` with one polyline per series,
its latest value and its highest in the caption. Values are numbers the cloud stored,
and every text is escaped, so the SVG carries nothing a node could inject.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from markupsafe import Markup

from dmg.cloud.portal.format import human_bytes

WIDTH = 260
HEIGHT = 60
COLOURS = ("#4a7bd0", "#c0392b")


@dataclass(frozen=True)
class Series:
    label: str
    key: Callable[[dict[str, Any]], float]


def _points(samples: Sequence[dict[str, Any]], series: Series, *, start: float, end: float,
            top: float) -> str:
    span = max(end - start, 1.0)
    coords = []
    for sample in samples:
        x = (float(sample["at"]) - start) / span * WIDTH
        y = HEIGHT - (series.key(sample) / top * (HEIGHT - 4)) - 2 if top > 0 else HEIGHT - 2
        coords.append(f"{max(0.0, min(WIDTH, x)):.1f},{y:.1f}")
    return " ".join(coords)


def line_chart(title: str, samples: Sequence[dict[str, Any]], series: Sequence[Series], *,
               start: float, end: float, fmt: Callable[[float], str], top: float | None = None) -> Markup:
    """An SVG chart of ``series`` over ``start``..``end`` (POSIX seconds); ``top``: the
    value at the top edge (default: the highest value seen)."""
    values = [s.key(sample) for s in series for sample in samples]
    highest = max(values, default=0.0)
    ceiling = top if top is not None else highest
    lines = "".join(
        f'<polyline fill="none" stroke="{COLOURS[i % len(COLOURS)]}" stroke-width="1.5" '
        f'points="{_points(samples, s, start=start, end=end, top=ceiling)}"/>'
        for i, s in enumerate(series))
    latest = ", ".join(f"{escape(s.label)} {escape(fmt(s.key(samples[-1])))}" for s in series) \
        if samples else "no data yet"
    caption = f"{escape(title)}: {latest} (max {escape(fmt(highest))})"
    return Markup(
        f'<figure class="chart"><svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{caption}">'
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff" stroke="#d9dde4"/>{lines}</svg>'
        f"<figcaption>{caption}</figcaption></figure>")


def _number(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def node_charts(samples: Sequence[dict[str, Any]], *, start: float, end: float) -> list[Markup]:
    """A node's CPU, free memory, jobs running / limit and throughput over the window."""
    return [
        line_chart("CPU", samples, [Series("cpu", lambda s: float(s["cpu_percent"]))],
                   start=start, end=end, fmt=lambda v: f"{v:.0f} %", top=100.0),
        line_chart("memory available", samples,
                   [Series("free", lambda s: float(s["memory_available"]))],
                   start=start, end=end, fmt=human_bytes),
        line_chart("jobs", samples, [Series("running", lambda s: float(s["running"])),
                                     Series("limit", lambda s: float(s["limit"]))],
                   start=start, end=end, fmt=_number),
        line_chart("throughput", samples,
                   [Series("in", lambda s: float(s["network_in"])),
                    Series("out", lambda s: float(s["network_out"]))],
                   start=start, end=end, fmt=lambda v: human_bytes(v) + "/s"),
    ]
