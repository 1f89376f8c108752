"""Who is calling, and what each route lets them do: the scope of every route.

Kinds of caller (:class:`Caller`): a **user** (the cloud's API token, or a portal
session cookie), a **node** (its registration token; it acts only for itself and its
gateway), a gateway **key** holder (only ``POST /nodes/register``, key in the body),
and **nobody**.

Every route declares its scope with exactly one of these dependencies, and
:func:`route_scope` reads it back (the API test walks every route with it; the app
refuses to start with a route that declares none, :func:`check_scopes`; the OpenAPI
document names it, ``x-dmg-scope``):

- :func:`require_user` -> ``user``; a node token gets 403, anything else 401;
- :func:`require_node` (:data:`Node`) -> ``node``; the API token gets 403, anything else 401;
- :func:`by_gateway_key` -> ``gateway key`` (the key is checked by the route, 401 if wrong);
- :func:`portal_session` -> ``portal`` (HTML pages; the session cookie is checked in the page);
- :func:`public` -> ``public`` (health, the portal's login form).

Wrong, missing and revoked tokens get the same 401, whatever exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import BaseRoute

from dmg.cloud.keys import token_matches
from dmg.cloud.service import CloudService, NodeIdentity
from dmg.errors import PermissionDenied, Unauthorized

bearer = HTTPBearer(auto_error=False, description="users: the API token; nodes: their node token")

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]

USER = "user"
NODE = "node"
KEY = "gateway key"
PORTAL = "portal"
PUBLIC = "public"

#: Where a request's :class:`Caller` is kept once known (the request guard sets it
#: before the body is read).
CALLER_STATE = "dmg_caller"

_NO_TOKEN = Unauthorized("this request needs a token",
                         hint="send `Authorization: Bearer <token>`: the cloud's API token for users "
                              "(`dmg cloud token` prints it), the node's token for nodes")
_BAD_TOKEN = Unauthorized("the token is not valid (wrong, or its node was removed)",
                          hint="users: `dmg cloud token` on the cloud's machine prints the API token; "
                               "nodes: register again with `dmg node register`")


@dataclass(frozen=True)
class Caller:
    """``kind``: ``user``, ``node``, ``none`` (no token) or ``unknown`` (a token nobody owns)."""

    kind: str
    node: NodeIdentity | None = None


def service(request: Request) -> CloudService:
    svc: CloudService = request.app.state.service
    return svc


async def _service(request: Request) -> CloudService:
    """:func:`service` as a dependency: async, so FastAPI calls it on the event loop
    instead of a worker thread (a sync dependency costs a thread hop per request)."""
    return service(request)


def bearer_token(authorization: str) -> str:
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def identify(svc: CloudService, api_token: str, token: str) -> Caller:
    """Who owns ``token`` (blocking: it may read the database)."""
    if not token:
        return Caller("none")
    if token_matches(token, api_token):
        return Caller(USER)
    try:
        return Caller(NODE, svc.authenticate_node(token))
    except Unauthorized:
        return Caller("unknown")


def identify_cached(svc: CloudService, api_token: str, token: str) -> Caller | None:
    """:func:`identify` without the database (None: it must be asked): no token, the API
    token, or a node token the service remembers (:class:`.service.tokens.TokenCache`)."""
    if not token:
        return Caller("none")
    if token_matches(token, api_token):
        return Caller(USER)
    node = svc.tokens.get(token)
    return Caller(NODE, node) if node is not None else None


async def identify_async(svc: CloudService, api_token: str, token: str) -> Caller:
    """:func:`identify`, on a worker thread only when the database must be read."""
    caller = identify_cached(svc, api_token, token)
    if caller is None:
        caller = await run_in_threadpool(identify, svc, api_token, token)
    return caller


async def caller_of(request: Request) -> Caller:
    known = request.scope.get("state", {}).get(CALLER_STATE)
    if isinstance(known, Caller):
        return known
    token = bearer_token(request.headers.get("authorization", ""))
    caller = await identify_async(service(request), request.app.state.api_token, token)
    request.scope.setdefault("state", {})[CALLER_STATE] = caller
    return caller


def refusal(caller: Caller, scope: str) -> Unauthorized | PermissionDenied | None:
    """Why ``caller`` may not use a route of ``scope`` (None: it may)."""
    if scope not in (USER, NODE) or caller.kind == scope:
        return None
    if caller.kind == "none":
        return _NO_TOKEN
    if caller.kind == "unknown":
        return _BAD_TOKEN
    if scope == USER:
        return PermissionDenied("a node token cannot do this", hint="this needs the cloud's API token")
    return PermissionDenied("the API token cannot act as a node", hint="nodes send their own node token")


async def require_user(request: Request, credentials: Credentials) -> None:
    """Accept the API token (``Authorization: Bearer``); else 401 (403 for a node token)."""
    problem = refusal(await caller_of(request), USER)
    if problem is not None:
        raise problem


async def require_node(request: Request, credentials: Credentials) -> NodeIdentity:
    """The node owning the bearer token; else 401 (403 for the API token)."""
    caller = await caller_of(request)
    problem = refusal(caller, NODE)
    if problem is not None:
        raise problem
    assert caller.node is not None
    return caller.node


async def by_gateway_key() -> None:
    """Scope marker: the route authenticates with a gateway key in its body."""


async def portal_session() -> None:
    """Scope marker: an HTML page of the portal (it checks the session cookie itself)."""


async def public() -> None:
    """Scope marker: open to anyone."""


Node = Annotated[NodeIdentity, Depends(require_node)]
Service = Annotated[CloudService, Depends(_service)]

SCOPE_OF: dict[Callable[..., Any], str] = {
    require_user: USER, require_node: NODE, by_gateway_key: KEY, portal_session: PORTAL, public: PUBLIC,
}


def _calls(dependant: Any) -> Iterable[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[RouteContext]:
    """Every API route of an app's ``routes`` as served (included routers flattened,
    their prefixes and dependencies applied)."""
    for context in iter_route_contexts(routes):
        if isinstance(context.original_route, APIRoute):
            yield context


def route_scope(route: RouteContext) -> str | None:
    """The scope a route declares, or None when it declares none or more than one."""
    scopes = {SCOPE_OF[call] for call in _calls(route.dependant) if call in SCOPE_OF}
    return scopes.pop() if len(scopes) == 1 else None


def check_scopes(routes: Sequence[BaseRoute]) -> dict[str, str]:
    """``{"METHOD path": scope}`` of every API route; RuntimeError naming the routes that
    declare no scope (or several)."""
    found: dict[str, str] = {}
    missing = []
    for route in api_routes(routes):
        scope = route_scope(route)
        for method in sorted(route.methods or ()):
            if scope is None:
                missing.append(f"{method} {route.path}")
            else:
                found[f"{method} {route.path}"] = scope
    if missing:
        raise RuntimeError("routes without exactly one declared scope: " + ", ".join(missing))
    return found
