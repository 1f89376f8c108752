"""The portal's pages: gateways, a gateway (nodes, charts, keys, actions), runs, a run, an
activity run (every shard and attempt, the per-file report) and a run's attempts.

Every page needs a signed-in :class:`~dmg.cloud.api.portal.Viewer` (else the sign-in
page, 401). Parts that change (``…/live``) are fetched again every :data:`REFRESH`
seconds by htmx and swapped in place, without a reload. Pages read through the same
:class:`~dmg.cloud.service.CloudService` methods as the API.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from dmg.cloud.api.auth import portal_session, service
from dmg.cloud.api.portal import Viewer, refused_page, sign_in_page, viewer_of
from dmg.cloud.portal.charts import node_charts
from dmg.cloud.portal.templating import templates
from dmg.cloud.schemas import NAME_PATTERN
from dmg.cloud.service import CloudService
from dmg.errors import DmgError

router = APIRouter(include_in_schema=False, dependencies=[Depends(portal_session)])

#: Seconds between two refreshes of a page's live part.
REFRESH = 3
RECENT_RUNS = 15
RUNS_LISTED = 100
#: Seconds of history the charts show.
CHART_WINDOW = 3600.0

Build = Callable[[CloudService], dict[str, Any]]

#: What the gateway page says after an action (``?done=<action>``), from its own words
#: only: a link someone else made cannot put text of theirs on the page.
DONE = {
    "limit": "{node}: limit {limit} asked; the node applies it at its next heartbeat",
    "drain": "{node}: drain asked; it takes no new work from its next heartbeat",
    "undrain": "{node}: undrain asked; it takes work again from its next heartbeat",
    "remove": "{node} removed; its token no longer works (stop its process)",
    "regenerate": "{key} regenerated; the old one no longer registers nodes",
}


def done_message(gateway: dict[str, Any], done: str, node: str, limit: str, key: str) -> str:
    """The sentence for ``done``, only with a node of this gateway, a number, key1/key2."""
    names = {n["name"] for n in gateway["nodes"]}
    if done not in DONE or (done in ("limit", "drain", "undrain") and node not in names):
        return ""
    if done == "limit" and not limit.isdigit():
        return ""
    if done == "regenerate" and key not in ("key1", "key2"):
        return ""
    if done == "remove" and (node in names or not re.match(NAME_PATTERN, node)):
        return ""
    return DONE[done].format(node=node, limit=limit, key=key)


async def _render(request: Request, template: str, build: Build) -> Response:
    viewer = await viewer_of(request)
    if viewer is None:
        return sign_in_page(request)
    svc = service(request)
    try:
        context = await run_in_threadpool(build, svc)
    except DmgError as exc:
        return refused_page(request, str(exc), status=exc.http_status)
    context.update(viewer=viewer, now=svc.clock(), refresh=REFRESH)
    return templates.TemplateResponse(request, template, context, headers={"Cache-Control": "no-store"})


def _run_counts(svc: CloudService, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return svc.file_counts([a["id"] for r in runs for a in r["activity_runs"]])


@router.get("/", response_class=HTMLResponse)
async def gateways_page(request: Request) -> Response:
    def build(svc: CloudService) -> dict[str, Any]:
        return {"gateways": svc.list_gateways(nodes=True), "runs": svc.list_runs(limit=RECENT_RUNS)}
    return await _render(request, "gateways.html", build)


def _gateway_context(svc: CloudService, name: str, request: Request) -> dict[str, Any]:
    gateway = svc.gateway(name)
    now = svc.clock()
    charts = {node["name"]: node_charts(svc.node_history(name, node["name"], since=CHART_WINDOW)["samples"],
                                        start=now - CHART_WINDOW, end=now)
              for node in gateway["nodes"]}
    return {"gateway": gateway, "requests": svc.node_requests(name), "charts": charts,
            "cloud_url": str(request.base_url).rstrip("/")}


@router.get("/gateways/{name}", response_class=HTMLResponse)
async def gateway_page(name: str, request: Request, done: str = "", node: str = "", limit: str = "",
                       key: str = "") -> Response:
    """``done`` (and ``node``, ``limit``, ``key``): what the last action did (the actions
    redirect here with it)."""
    def build(svc: CloudService) -> dict[str, Any]:
        context = _gateway_context(svc, name, request)
        message = done_message(context["gateway"], done, node, limit, key)
        return {**context, "keys": svc.gateway_keys(name), "message": message}
    return await _render(request, "gateway.html", build)


@router.get("/gateways/{name}/live", response_class=HTMLResponse)
async def gateway_live(name: str, request: Request) -> Response:
    """The node table and charts of a gateway (the part the gateway page refreshes)."""
    return await _render(request, "_live.html", lambda svc: _gateway_context(svc, name, request))


@router.get("/runs", response_class=HTMLResponse)
async def runs_page(request: Request) -> Response:
    return await _render(request, "runs.html", lambda svc: {"runs": svc.list_runs(limit=RUNS_LISTED)})


@router.get("/runs/live", response_class=HTMLResponse)
async def runs_live(request: Request) -> Response:
    return await _render(request, "_runs_table.html", lambda svc: {"runs": svc.list_runs(limit=RUNS_LISTED)})


def _run_context(svc: CloudService, run_id: str) -> dict[str, Any]:
    run = svc.run(run_id)
    return {"run": run, "counts": _run_counts(svc, [run])}


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(run_id: str, request: Request) -> Response:
    return await _render(request, "run.html", lambda svc: _run_context(svc, run_id))


@router.get("/runs/{run_id}/live", response_class=HTMLResponse)
async def run_live(run_id: str, request: Request) -> Response:
    return await _render(request, "_run_live.html", lambda svc: _run_context(svc, run_id))


@router.get("/runs/{run_id}/activities/{activity_run_id}", response_class=HTMLResponse)
async def activity_page(run_id: str, activity_run_id: str, request: Request,
                        page: int = Query(default=1, ge=1, le=1_000_000)) -> Response:
    """Every shard and attempt of one activity run, and a page of its per-file report."""
    def build(svc: CloudService) -> dict[str, Any]:
        report = svc.activity_report(run_id, activity_run_id, page=page)
        run = svc.run(run_id)
        [activity] = [a for a in run["activity_runs"] if a["id"] == activity_run_id]
        attempts = [t for t in svc.run_attempts(run_id) if t["activity_run_id"] == activity_run_id]
        return {"run": run, "a": activity, "attempts": attempts, "report": report}
    return await _render(request, "activity.html", build)


@router.get("/runs/{run_id}/attempts", response_class=HTMLResponse)
async def attempts_page(run_id: str, request: Request) -> Response:
    """Every attempt of every shard of the run."""
    def build(svc: CloudService) -> dict[str, Any]:
        by_shard: dict[str, list[dict[str, Any]]] = {}
        for attempt in svc.run_attempts(run_id):
            by_shard.setdefault(attempt["shard_id"], []).append(attempt)
        return {"run": svc.run(run_id), "by_shard": by_shard}
    return await _render(request, "attempts.html", build)


@router.get("/runs/{run_id}/report.jsonl")
async def run_report(run_id: str, request: Request) -> Response:
    """The run's per-file report (JSON Lines), for a signed-in browser."""
    viewer: Viewer | None = await viewer_of(request)
    if viewer is None:
        return sign_in_page(request)
    try:
        lines = await run_in_threadpool(service(request).run_report, run_id)
    except DmgError as exc:
        return refused_page(request, str(exc), status=exc.http_status)
    return StreamingResponse(lines, media_type="application/x-ndjson",
                             headers={"Content-Disposition": f'attachment; filename="run-{run_id}.jsonl"'})
