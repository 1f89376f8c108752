"""The portal's inline SVG charts: points inside the box, latest and highest values in words."""

from __future__ import annotations

import re

from dmg.cloud.portal.charts import HEIGHT, WIDTH, Series, line_chart, node_charts


def sample(at: float, **figures: float) -> dict[str, float]:
    base = {"cpu_percent": 0.0, "memory_available": 0.0, "running": 0.0, "limit": 4.0,
            "network_in": 0.0, "network_out": 0.0}
    return {"at": at, **base, **figures}


def test_points_stay_in_the_box_and_the_caption_says_latest_and_max() -> None:
    samples = [sample(1000 + i * 60, cpu_percent=v) for i, v in enumerate((10.0, 90.0, 40.0))]
    svg = str(line_chart("CPU", samples, [Series("cpu", lambda s: s["cpu_percent"])], start=1000, end=1120,
                         fmt=lambda v: f"{v:.0f} %", top=100.0))
    points = [tuple(map(float, p.split(","))) for p in re.search(r'points="([^"]*)"', svg).group(1).split()]
    assert [x for x, _ in points] == [0.0, WIDTH / 2, WIDTH]
    assert all(0 <= y <= HEIGHT for _, y in points)
    assert points[1][1] < points[2][1] < points[0][1]  # higher value, nearer the top
    assert "CPU: cpu 40 % (max 90 %)" in svg


def test_a_node_without_history_gets_empty_charts_and_text_is_escaped() -> None:
    charts = [str(c) for c in node_charts([], start=0, end=3600)]
    assert len(charts) == 4 and all("no data yet" in c for c in charts)
    svg = str(line_chart("<b>x</b>", [sample(1)], [Series("<i>", lambda s: s["limit"])], start=0, end=2,
                         fmt=str))
    assert "<b>" not in svg and "<i>" not in svg and "&lt;b&gt;" in svg
