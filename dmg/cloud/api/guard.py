"""The request guard: limits and authentication before a request body is read.

A pure ASGI middleware, so nothing is buffered before it decides:

1. A body declared (``Content-Length``) larger than the route's limit -> 413, unread.
2. A route of scope ``user`` or ``node`` (:mod:`.auth`) whose caller may not use it
   -> 401/403, body unread. The caller found is kept for the route's dependency.
3. The body is read, counted while it streams (chunked bodies have no length): past
   the limit -> 413 and the rest is never read. It is then handed to the app.

Limits: (:data:`dmg.cloud.service.stores.STORE_MAX_BYTES`, 64 KiB) for ``POST /api/v1/stores``,
:data:`dmg.definitions.MAX_DEFINITION_BYTES` for ``POST /api/v1/pipelines``,
``settings.cloud_max_body`` (``DMG_CLOUD_MAX_BODY``) for anything else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dmg.cloud.api.auth import CALLER_STATE, api_routes, bearer_token, identify_async, refusal, route_scope
from dmg.cloud.service.stores import STORE_MAX_BYTES
from dmg.definitions import MAX_DEFINITION_BYTES
from dmg.errors import DmgError, Fatal, Retryable, TooLarge

log = logging.getLogger(__name__)

_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
#: How many (method, path) -> scope answers the guard keeps before starting afresh.
_PATHS_KEPT = 1024


def _error(err: DmgError, *, status: int | None = None) -> JSONResponse:
    return JSONResponse(err.to_json(), status_code=status or err.http_status,
                        headers={"Connection": "close"})


class RequestGuard:
    """See the module docstring. ``routes`` returns the app's routes (read per request,
    so routes added after the middleware count)."""

    def __init__(self, app: ASGIApp, *, routes: Callable[[], list[Any]], max_body: int,
                 state: Callable[[], Any]) -> None:
        self.app = app
        self.routes = routes
        self.max_body = max_body
        self.state = state
        self._routes_seen = -1
        self._scoped: list[tuple[Any, str | None]] = []
        self._by_path: dict[tuple[str, str], str | None] = {}
        self.limits = {"/api/v1/stores": min(STORE_MAX_BYTES, max_body),
                       "/api/v1/pipelines": min(MAX_DEFINITION_BYTES, max_body)}

    def limit(self, path: str) -> int:
        return self.limits.get(path.rstrip("/") or "/", self.max_body)

    def _scoped_routes(self) -> list[tuple[Any, str | None]]:
        """Every API route with its scope, worked out once per set of routes (flattening
        the routers and walking each route's dependencies costs more than the request)."""
        routes = self.routes()
        if self._routes_seen != len(routes):
            self._scoped = [(route, route_scope(route)) for route in api_routes(routes)]
            self._by_path.clear()
            self._routes_seen = len(routes)
        return self._scoped

    def _scope_of(self, scope: Scope) -> str | None:
        scoped = self._scoped_routes()
        key = (scope["method"], scope["path"])
        if key in self._by_path:
            return self._by_path[key]
        found = None
        for route, kind in scoped:
            if route.matches(scope)[0] == Match.FULL:
                found = kind
                break
        if len(self._by_path) >= _PATHS_KEPT:  # paths carry ids: keep the cache bounded
            self._by_path.clear()
        self._by_path[key] = found
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope["path"])
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _error(TooLarge(f"the request body is {declared} bytes, more than {limit}",
                                  hint="see README: limits of the cloud API"))(scope, receive, send)
            return
        route_kind = self._scope_of(scope)
        if route_kind is not None:
            try:
                problem = await self._authenticate(scope, headers, route_kind)
            except DmgError as exc:
                problem = exc
            except (OperationalError, PoolTimeout) as exc:  # the database away: the node sends again
                log.error("cannot authenticate %s %s: the database (%s)", scope["method"], scope["path"],
                          type(exc.orig if isinstance(exc, OperationalError) else exc).__name__)
                problem = Retryable("the cloud database cannot be reached",
                                    hint="check the database server and the cloud's DMG_CLOUD_DB")
            except Exception:  # never a traceback to the caller
                log.exception("cannot authenticate %s %s", scope["method"], scope["path"])
                problem = Fatal("the cloud cannot check the token now", hint="see the cloud's log")
            if problem is not None:
                await _error(problem)(scope, receive, send)
                return
        if scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        body = await self._read(receive, limit)
        if body is None:
            await _error(TooLarge(f"the request body is more than {limit} bytes",
                                  hint="see README: limits of the cloud API"))(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: disconnect notices

        await self.app(scope, replay, send)

    async def _authenticate(self, scope: Scope, headers: dict[str, str], route_kind: str) -> DmgError | None:
        if route_kind not in ("user", "node"):
            return None
        state = self.state()
        caller = await identify_async(state.service, state.api_token,
                                      bearer_token(headers.get("authorization", "")))
        scope.setdefault("state", {})[CALLER_STATE] = caller
        return refusal(caller, route_kind)

    @staticmethod
    async def _read(receive: Receive, limit: int) -> bytes | None:
        """The whole body, or None once it passes ``limit`` bytes (the rest unread)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)
