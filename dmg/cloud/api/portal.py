"""Routes of the portal: ``/`` (dashboard), ``/login``, ``/logout``,
``/runs/<id>/report.jsonl`` (a run's per-file report), ``/runs/<id>/attempts`` (every
attempt of its shards) and ``POST /runs/<id>/cancel``
(its Cancel button; the session cookie is ``SameSite=Strict``, so another site's
page cannot post it).

The browser signs in once with the API token (a POST form, so the token never
shows in a URL or an access log); the cookie then holds a random session id that
the cloud keeps (:mod:`dmg.cloud.service.sessions`) and forgets at ``/logout``.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from dmg.cloud.api.auth import portal_session, public, service
from dmg.cloud.keys import token_matches
from dmg.cloud.portal import render
from dmg.cloud.portal.attempts import attempts_page

router = APIRouter(include_in_schema=False)

COOKIE = "dmg_portal"
RECENT_RUNS = 15


async def _signed_in(request: Request) -> bool:
    expected = request.app.state.api_token
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer ") and token_matches(header[7:].strip(), expected):
        return True
    cookie = request.cookies.get(COOKIE, "")
    return bool(cookie) and await run_in_threadpool(service(request).portal_session_open, cookie)


@router.get("/", response_class=HTMLResponse, dependencies=[Depends(portal_session)])
async def dashboard(request: Request) -> Response:
    if not await _signed_in(request):
        return HTMLResponse(render.login_page(), status_code=401)
    svc = service(request)
    gateways = await run_in_threadpool(svc.list_gateways, nodes=True)
    runs = await run_in_threadpool(svc.list_runs, limit=RECENT_RUNS, shards=True)
    counts = await run_in_threadpool(svc.file_counts, [a["id"] for r in runs for a in r["activity_runs"]])
    return HTMLResponse(render.dashboard(gateways, runs, now=svc.clock(), counts=counts),
                        headers={"Cache-Control": "no-store"})


@router.get("/runs/{run_id}/report.jsonl", dependencies=[Depends(portal_session)])
async def run_report(run_id: str, request: Request) -> Response:
    """The run's per-file report (JSON Lines), for a signed-in browser."""
    if not await _signed_in(request):
        return HTMLResponse(render.login_page(), status_code=401)
    lines = await run_in_threadpool(service(request).run_report, run_id)
    return StreamingResponse(lines, media_type="application/x-ndjson",
                             headers={"Content-Disposition": f'attachment; filename="run-{run_id}.jsonl"'})


@router.get("/runs/{run_id}/attempts", response_class=HTMLResponse, dependencies=[Depends(portal_session)])
async def run_attempts(run_id: str, request: Request) -> Response:
    """Every attempt of every shard of the run, for a signed-in browser."""
    if not await _signed_in(request):
        return HTMLResponse(render.login_page(), status_code=401)
    svc = service(request)
    run = await run_in_threadpool(svc.run, run_id)
    attempts = await run_in_threadpool(svc.run_attempts, run_id)
    return HTMLResponse(attempts_page(run, attempts), headers={"Cache-Control": "no-store"})


@router.post("/runs/{run_id}/cancel", dependencies=[Depends(portal_session)])
async def cancel_run(run_id: str, request: Request) -> Response:
    """The run view's Cancel button: cancel, then back to the dashboard."""
    if not await _signed_in(request):
        return HTMLResponse(render.login_page(), status_code=401)
    gateway_id, _run = await run_in_threadpool(service(request).cancel_run, run_id)
    request.app.state.notifier.notify(gateway_id)
    return RedirectResponse("/", status_code=303)


@router.post("/login", dependencies=[Depends(public)])
async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode(errors="replace"))
    given = (form.get("token") or [""])[0].strip()
    expected = request.app.state.api_token
    if not token_matches(given, expected):
        return HTMLResponse(render.login_page(error="That is not the cloud's API token."), status_code=401)
    session_id = await run_in_threadpool(service(request).open_portal_session)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, session_id, httponly=True, samesite="strict")
    return response


@router.get("/logout", dependencies=[Depends(portal_session)])
async def logout(request: Request) -> Response:
    """End the session: its cookie stops working at once, here and on every copy of it."""
    cookie = request.cookies.get(COOKIE, "")
    if cookie:
        await run_in_threadpool(service(request).close_portal_session, cookie)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE)
    return response
