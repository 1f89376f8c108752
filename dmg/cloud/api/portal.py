"""The portal's sign-in, sign-out and static files, and who is looking at a page.

The browser signs in once with the API token (a POST form, so the token never shows in
a URL or an access log); the cookie then holds a random session id that the cloud keeps
(:mod:`dmg.cloud.service.sessions`) and forgets at ``/logout``. The cookie is
``HttpOnly`` and ``SameSite=Strict``. Pages also accept the API token as a bearer
header (scripts, tests); a node's token opens nothing of the portal. Pages and actions
are in :mod:`.portal_pages` and :mod:`.portal_actions`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from dmg.cloud.api.auth import bearer_token, portal_session, public, service
from dmg.cloud.keys import token_matches
from dmg.cloud.portal.csrf import csrf_token
from dmg.cloud.portal.templating import HERE, templates

router = APIRouter(include_in_schema=False)

COOKIE = "dmg_portal"
#: The files under ``/portal-static/`` (nothing else of the package is served).
STATIC = {"style.css": "text/css", "htmx.min.js": "text/javascript", "htmx-LICENSE.txt": "text/plain"}


@dataclass(frozen=True)
class Viewer:
    """A signed-in user: by a session cookie (``session_id``, ``csrf`` its forms' token),
    or by the API token as a bearer header (``session_id`` and ``csrf`` empty)."""

    session_id: str
    csrf: str

    @property
    def who(self) -> str:
        """For the audit log: the session's fingerprint (never the session id itself)."""
        if not self.session_id:
            return "api-token"
        return "session:" + hashlib.sha256(self.session_id.encode()).hexdigest()[:12]


async def viewer_of(request: Request) -> Viewer | None:
    """Who is signed in, or None (no session, an ended one, a node's token, garbage)."""
    api_token = request.app.state.api_token
    given = bearer_token(request.headers.get("authorization", ""))
    if given and token_matches(given, api_token):
        return Viewer(session_id="", csrf="")
    cookie = request.cookies.get(COOKIE, "")
    if not cookie:
        return None
    if await run_in_threadpool(service(request).portal_session_open, cookie):
        return Viewer(session_id=cookie, csrf=csrf_token(api_token, cookie))
    return None


def sign_in_page(request: Request, *, error: str = "", status: int = 401) -> HTMLResponse:
    return templates.TemplateResponse(request, "login.html", {"error": error}, status_code=status,
                                      headers={"Cache-Control": "no-store"})


def refused_page(request: Request, message: str, *, status: int, back: str = "/") -> HTMLResponse:
    """A page that says in one line why a request was refused."""
    return templates.TemplateResponse(request, "refused.html", {"message": message, "back": back},
                                      status_code=status, headers={"Cache-Control": "no-store"})


@router.post("/login", dependencies=[Depends(public)])
async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode(errors="replace"))
    given = (form.get("token") or [""])[0].strip()
    if not token_matches(given, request.app.state.api_token):
        return sign_in_page(request, error="That is not the cloud's API token.")
    session_id = await run_in_threadpool(service(request).open_portal_session)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, session_id, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
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


@router.get("/portal-static/{name}", dependencies=[Depends(public)])
async def static_file(name: str) -> Response:
    """The portal's stylesheet and vendored script (no CDN)."""
    kind = STATIC.get(name)
    if kind is None:
        return Response("not found\n", status_code=404, media_type="text/plain")
    return Response((HERE / "static" / name).read_bytes(), media_type=kind,
                    headers={"Cache-Control": "max-age=3600"})
