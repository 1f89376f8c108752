"""The portal's attempts page of a run: every attempt of every shard and how it ended."""

from __future__ import annotations

from html import escape
from typing import Any

from dmg.cloud.portal.render import RUN_ENDED, _cells, _table, badge, duration, page, when


def _ended(attempt: dict[str, Any]) -> str:
    if not attempt["outcome"]:
        return f'<span class="muted">({escape(attempt["status"])})</span>'
    error = attempt["error"]
    text = badge(attempt["outcome"])
    return text + (f' <span class="error">{escape(error)}</span>' if error else "")


def attempts_page(run: dict[str, Any], attempts: list[dict[str, Any]]) -> str:
    """One table per shard that has attempts, in run order; each shard has an anchor."""
    parts = [f"<h1>{badge(run['status'])} {escape(run['pipeline'])}: attempts</h1>",
             f'<p class="muted">run {escape(run["id"])} on {escape(run["gateway"])}. '
             'Times are UTC. <a href="/">Back to the dashboard</a></p>']
    if not attempts:
        parts.append('<p class="muted">No attempt reported yet.</p>')
    by_shard: dict[str, list[dict[str, Any]]] = {}
    for attempt in attempts:
        by_shard.setdefault(attempt["shard_id"], []).append(attempt)
    for shard_id, rows in by_shard.items():
        first = rows[0]
        parts.append(f'<h3 id="shard-{escape(shard_id)}">activity {escape(first["activity"])}, '
                     f'shard {first["shard_index"]} <span class="muted">{escape(shard_id)}</span></h3>')
        cells = ["<tr>" + _cells([
            str(a["attempt"]), escape(a["node"] or "-"), when(a["placed_at"]), when(a["started_at"]),
            when(a["ended_at"]), duration(a["started_at"], a["ended_at"]), _ended(a),
            escape(a["wait_reason"]),
        ], numeric={0}) + "</tr>" for a in rows]
        parts.append(_table(["attempt", "node", "placed", "started", "ended", "ran", "how it ended",
                             "why it waited"], cells))
    return page(f"dmg cloud: attempts of run {run['id']}", "".join(parts),
                refresh=run["status"] not in RUN_ENDED)
