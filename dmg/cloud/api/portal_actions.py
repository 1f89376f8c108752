"""The portal's actions (HTML form POSTs): a node's limit, drain, undrain, remove; a
gateway key regenerated; a run cancelled.

Each needs a signed-in user (:func:`~dmg.cloud.api.portal.viewer_of`; a node's token
opens nothing) and, for a session, the form's CSRF token (:mod:`dmg.cloud.portal.csrf`):
without it, or with a wrong one, the action is refused with 403 and a page that says
why. Each calls the same service method as the API route for it, is written to the log
(``portal action ... by=session:<fingerprint>``), and redirects back to the page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from dmg.cloud.api.auth import portal_session, service
from dmg.cloud.api.portal import Viewer, refused_page, sign_in_page, viewer_of
from dmg.cloud.portal.csrf import FIELD, csrf_matches
from dmg.errors import BadInput, DmgError

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False, dependencies=[Depends(portal_session)])

CSRF_REFUSED = ("refused: this form carries no valid CSRF token (it is stale, or it was sent by "
                "another site); reload the page and try again")


async def _act(request: Request, action: str, back: str,
               do: Callable[[dict[str, str]], str], **audit: str) -> Response:
    """Check the viewer and the CSRF token, run ``do(form)``, log it, and go ``back``.

    ``do`` returns the query that tells the page what was done (``done=<action>&…``,
    shown from the page's own fixed sentences, :data:`dmg.cloud.api.portal_pages.DONE`),
    or ""."""
    viewer: Viewer | None = await viewer_of(request)
    if viewer is None:
        return sign_in_page(request)
    raw = parse_qs((await request.body()).decode(errors="replace"))
    form = {key: values[0] for key, values in raw.items() if values}
    fields = " ".join(f"{k}={v}" for k, v in audit.items())
    if viewer.session_id and not csrf_matches(request.app.state.api_token, viewer.session_id,
                                              form.get(FIELD, "")):
        log.warning("portal action refused (CSRF) action=%s %s by=%s", action, fields, viewer.who)
        return refused_page(request, CSRF_REFUSED, status=403, back=back)
    try:
        said = await run_in_threadpool(do, form)
    except DmgError as exc:
        log.info("portal action failed action=%s %s by=%s error=%s", action, fields, viewer.who, exc.message)
        return refused_page(request, str(exc), status=exc.http_status, back=back)
    log.info("portal action action=%s %s by=%s", action, fields, viewer.who)
    where = back + (("?" + said) if said else "")
    return RedirectResponse(where, status_code=303)


def _gateway_page(name: str) -> str:
    return f"/gateways/{quote(name, safe='')}"


def _limit(form: dict[str, Any]) -> int:
    text = str(form.get("limit", "")).strip()
    if not text.isdigit():
        raise BadInput(f"the limit must be a whole number, not {text!r}", hint="give 1 to 1024")
    return int(text)


@router.post("/gateways/{name}/nodes/{node}/limit")
async def set_limit(name: str, node: str, request: Request) -> Response:
    """Ask the node for a new concurrent-job limit (applied by the node, as ``dmg scale``)."""
    svc = service(request)

    def do(form: dict[str, str]) -> str:
        limit = _limit(form)
        svc.request_node_limit(name, node, limit)
        return urlencode({"done": "limit", "node": node, "limit": limit})
    return await _act(request, "limit", _gateway_page(name), do, gateway=name, node=node)


@router.post("/gateways/{name}/nodes/{node}/drain")
async def drain(name: str, node: str, request: Request) -> Response:
    svc = service(request)

    def do(_form: dict[str, str]) -> str:
        svc.request_node_drain(name, node, True)
        return urlencode({"done": "drain", "node": node})
    return await _act(request, "drain", _gateway_page(name), do, gateway=name, node=node)


@router.post("/gateways/{name}/nodes/{node}/undrain")
async def undrain(name: str, node: str, request: Request) -> Response:
    svc = service(request)

    def do(_form: dict[str, str]) -> str:
        svc.request_node_drain(name, node, False)
        return urlencode({"done": "undrain", "node": node})
    return await _act(request, "undrain", _gateway_page(name), do, gateway=name, node=node)


@router.post("/gateways/{name}/nodes/{node}/remove")
async def remove(name: str, node: str, request: Request) -> Response:
    """Remove the node (as ``DELETE /gateways/{name}/nodes/{node}``): its token stops working."""
    svc = service(request)

    def do(_form: dict[str, str]) -> str:
        svc.remove_node(name, node)
        return urlencode({"done": "remove", "node": node})
    return await _act(request, "remove", _gateway_page(name), do, gateway=name, node=node)


@router.post("/gateways/{name}/keys/regenerate")
async def regenerate_key(name: str, request: Request) -> Response:
    svc = service(request)

    def do(form: dict[str, str]) -> str:
        which = form.get("key", "")
        if which not in ("key1", "key2"):
            raise BadInput(f"no gateway key {which!r}", hint="say key1 or key2")
        svc.regenerate_key(name, which)
        return urlencode({"done": "regenerate", "key": which})
    return await _act(request, "regenerate key", _gateway_page(name), do, gateway=name)


@router.post("/runs/{run_id}/cancel")
async def cancel_run(run_id: str, request: Request) -> Response:
    """A run page's Cancel button (as ``POST /api/v1/runs/{id}/cancel``)."""
    svc = service(request)

    def do(_form: dict[str, str]) -> str:
        gateway_id, _run = svc.cancel_run(run_id)
        request.app.state.notifier.notify(gateway_id)
        return ""
    return await _act(request, "cancel run", f"/runs/{quote(run_id, safe='')}", do, run=run_id)
