"""HTML pages of the portal, from the same JSON the API returns (escaped, no scripts)."""

from __future__ import annotations

import time
from html import escape
from importlib import resources
from typing import Any

REFRESH_SECONDS = 5


def _style() -> str:
    return resources.files("dmg.cloud.portal").joinpath("style.css").read_text()


def page(title: str, body: str, *, refresh: bool = False) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
            f"<title>{escape(title)}</title><style>{_style()}</style></head>"
            f"<body>{body}</body></html>")


def login_page(*, error: str = "") -> str:
    message = f'<p class="error">{escape(error)}</p>' if error else ""
    body = ("<h1>dmg cloud</h1>" + message +
            '<form method="post" action="/login"><p>API token (see <code>dmg cloud token</code> or '
            "<code>&lt;data dir&gt;/cloud/api-token</code>)</p>"
            '<input type="password" name="token" autofocus> <button type="submit">Open the portal</button>'
            "</form>")
    return page("dmg cloud: sign in", body)


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


RUN_ENDED = ("Succeeded", "Failed", "Cancelled")


def badge(status: str) -> str:
    css = escape(status.split(" ")[0])
    return f'<span class="status {css}">{escape(status)}</span>'


def _cells(values: list[str], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    return "".join(f'<td class="num">{v}</td>' if i in numeric else f"<td>{v}</td>"
                   for i, v in enumerate(values))


def _table(headers: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def nodes_table(nodes: list[dict[str, Any]], *, now: float) -> str:
    if not nodes:
        return '<p class="muted">No node registered yet: run <code>dmg node register</code>.</p>'
    rows = []
    for node in nodes:
        reasons = "".join(f"<li>{escape(r)}</li>" for r in node["reasons"])
        status = badge(node["status"]) + (f'<ul class="reasons">{reasons}</ul>' if reasons else "")
        rows.append("<tr>" + _cells([
            escape(node["name"]), status, escape(node["version"]), escape(node["role"] or "-"),
            f"{node['running']} / {node['limit']}",
            f"host {node['cpu_percent']:.0f} %, node {node.get('proc_cpu_percent') or 0:.0f} %",
            f"{human_bytes(node['memory_available'])} free, "
            f"node uses {human_bytes(node.get('proc_mem_bytes') or 0)}",
            f"{human_bytes(node['network_in'])}/s in, {human_bytes(node['network_out'])}/s out; node moved "
            f"{human_bytes(node.get('moved_in_bytes') or 0)} in, "
            f"{human_bytes(node.get('moved_out_bytes') or 0)} out",
            escape(node["credential_status"] or "-"), ago(node["last_heartbeat"], now),
        ], numeric={5}) + "</tr>")
    return _table(["node", "status", "version", "role", "jobs running / limit", "CPU (host, node)", "memory",
                   "network", "credentials", "last heartbeat"], rows)


def shards_table(shards: list[dict[str, Any]], *, run_id: str = "") -> str:
    """The shards of an activity run; with ``run_id`` each attempt number links to the
    shard's attempts on the run's attempts page."""
    if not shards:
        return ""
    rows = []
    for shard in shards:
        attempt = str(shard["attempt"])
        if run_id:
            href = f"/runs/{escape(run_id)}/attempts#shard-{escape(shard['id'])}"
            attempt = f'<a href="{href}" title="every attempt of this shard">{attempt}</a>'

        waited = "" if shard["waited"] is None else f"{shard['waited']:.1f} s"
        reason = escape(shard["wait_reason"])
        rows.append("<tr>" + _cells([
            str(shard["index"]), badge(shard["status"]), escape(shard["node"] or "-"), attempt,
            f"{shard['files']} / {shard['files_total']}",
            f"{human_bytes(shard['bytes'])} / {human_bytes(shard['bytes_total'])}",
            waited + (f" ({reason})" if reason else ""), duration(shard["started_at"], shard["ended_at"]),
            f'<span class="error">{escape(shard["error"])}</span>',
        ], numeric={0, 3}) + "</tr>")
    return _table(["shard", "status", "node", "attempt", "files", "bytes", "waited", "ran", "error"], rows)


def progress(activity: dict[str, Any], *, now: float) -> str:
    """A bar of bytes (else files) done of total, the counts, and the throughput so far."""
    files, files_total = activity.get("files") or 0, activity.get("files_total") or 0
    size, size_total = activity.get("bytes") or 0, activity.get("bytes_total") or 0
    if size_total > 0:
        part = size / size_total
    elif files_total > 0:
        part = files / files_total
    else:
        part = 1.0 if activity["status"] in RUN_ENDED else 0.0
    part = max(0.0, min(1.0, part))
    started = activity.get("started_at")
    elapsed = ((activity.get("ended_at") or now) - started) if started is not None else 0.0
    rate = f", {size / elapsed / 1e6:.1f} MB/s" if elapsed > 0 and size else ""
    return (f'<span class="progress" title="{part * 100:.0f} %"><span style="width:{part * 100:.1f}%">'
            f"</span></span>{part * 100:.0f} %: {files} / {files_total} files, "
            f"{human_bytes(size)} / {human_bytes(size_total)}{rate}")


def file_counts(counts: dict[str, dict[str, int]]) -> str:
    """``copied 12 (3.0 MiB), skipped 4, failed 1`` from the per-file report."""
    if not counts:
        return ""
    parts = []
    for status in ("copied", "skipped", "failed"):
        if status in counts:
            item = counts[status]
            size = f" ({human_bytes(item['bytes'])})" if status == "copied" else ""
            parts.append(f"{status} {item['files']}{size}")
    return '<span class="counts">' + ", ".join(parts) + "</span>"


def cancel_form(run: dict[str, Any]) -> str:
    """A Cancel button for a run that has not ended (POST /runs/<id>/cancel)."""
    if run["status"] in RUN_ENDED:
        return ""
    return (f'<form class="cancel" method="post" action="/runs/{escape(run["id"])}/cancel">'
            '<button type="submit">Cancel run</button></form>')


def runs_section(runs: list[dict[str, Any]], counts: dict[str, dict[str, dict[str, int]]] | None = None,
                 *, now: float | None = None) -> str:
    if not runs:
        return '<p class="muted">No run yet: run a pipeline with <code>dmg pipeline run</code>.</p>'
    counts = counts or {}
    now = time.time() if now is None else now
    parts = []
    for run in runs:
        took = duration(run["started_at"], run["ended_at"])
        parts.append(
            f"<h3>{badge(run['status'])} {escape(run['pipeline'])} "
            f'<span class="muted">run {escape(run["id"][:12])} on {escape(run["gateway"])}, '
            f"created {when(run['created_at'])}{', took ' + took if took else ''}, "
            f'<a href="/runs/{escape(run["id"])}/report.jsonl">per-file report</a>, '
            f'<a href="/runs/{escape(run["id"])}/attempts">attempts</a></span>'
            f"{cancel_form(run)}</h3>")
        for activity in run["activity_runs"]:
            error = f' <span class="error">{escape(activity["error"])}</span>' if activity["error"] else ""
            tally = file_counts(counts.get(activity["id"], {}))
            parts.append(
                f"<p>{badge(activity['status'])} activity <b>{escape(activity['name'])}</b>: "
                f"{progress(activity, now=now)}, {len(activity.get('shards', []))} shard(s)"
                f"{'; ' + tally if tally else ''}{error}</p>")
            parts.append(shards_table(activity.get("shards", []), run_id=run["id"]))
    return "".join(parts)


def dashboard(gateways: list[dict[str, Any]], runs: list[dict[str, Any]], *, now: float,
              counts: dict[str, dict[str, dict[str, int]]] | None = None) -> str:
    sections = ["<h1>dmg cloud</h1>",
                f'<p class="muted">Refreshes every {REFRESH_SECONDS} s. '
                f'As of {when(now)} UTC. <a href="/logout">Sign out</a></p>',
                "<h2>Gateways</h2>"]
    if not gateways:
        sections.append('<p class="muted">No gateway yet: '
                        "create one with <code>dmg gateway create</code>.</p>")
    for gateway in gateways:
        sections.append(f"<h3>{escape(gateway['name'])} {badge(gateway['status'])} "
                        f'<span class="muted">version {escape(gateway["version"] or "-")}, '
                        f"{len(gateway['nodes'])} node(s)</span></h3>")
        reasons = "".join(f"<li>{escape(r)}</li>" for r in gateway.get("reasons") or [])
        if reasons:
            sections.append(f'<ul class="reasons">{reasons}</ul>')
        sections.append(nodes_table(gateway["nodes"], now=now))
    sections.append("<h2>Recent runs</h2>")
    sections.append(runs_section(runs, counts, now=now))
    return page("dmg cloud", "".join(sections), refresh=True)
