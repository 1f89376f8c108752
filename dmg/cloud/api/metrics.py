"""What the cloud costs per unit of work: request, SQL statement and transaction counters.

Off by default; ``DMG_CLOUD_METRICS=1`` (``settings.cloud_metrics``) installs the
counters and serves them to users at ``GET /api/v1/debug/metrics``:
``{requests, requests_by_route: {"METHOD /path/{param}": n}, statements,
transactions, cpu_seconds}``. ``bench/activities.py`` reads it before and after a
workload and divides by the activities run.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from sqlalchemy import Engine, event
from starlette.types import ASGIApp, Receive, Scope, Send

from dmg.cloud.api.auth import require_user

METRICS_PATH = "/api/v1/debug/metrics"


class CloudCounters:
    """Thread-safe counters of one cloud process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.statements = 0
        self.transactions = 0
        self.by_route: Counter[str] = Counter()

    def count_statement(self, *_args: Any) -> None:
        with self._lock:
            self.statements += 1

    def count_transaction(self, *_args: Any) -> None:
        with self._lock:
            self.transactions += 1

    def count_request(self, route: str) -> None:
        with self._lock:
            self.by_route[route] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": sum(self.by_route.values()), "requests_by_route": dict(self.by_route),
                    "statements": self.statements, "transactions": self.transactions,
                    "cpu_seconds": time.process_time()}


class RequestCounter:
    """Pure ASGI middleware counting every HTTP request by its route template (the
    metrics route itself excluded)."""

    def __init__(self, app: ASGIApp, *, counters: CloudCounters) -> None:
        self.app = app
        self.counters = counters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http" and scope["path"] != METRICS_PATH:
            route = scope.get("route")
            path = getattr(route, "path", None) or scope["path"]
            self.counters.count_request(f"{scope['method']} {path}")


def install_metrics(app: FastAPI, engine: Engine) -> CloudCounters:
    """Count ``engine``'s statements and commits and ``app``'s requests; add the route."""
    counters = CloudCounters()
    event.listen(engine, "before_cursor_execute", counters.count_statement)
    event.listen(engine, "commit", counters.count_transaction)
    app.add_middleware(RequestCounter, counters=counters)
    router = APIRouter(dependencies=[Depends(require_user)])

    @router.get("/debug/metrics", tags=["health"])
    def metrics() -> dict[str, Any]:
        """Request, SQL statement and transaction counts and CPU seconds of this cloud
        process since it started (only with ``DMG_CLOUD_METRICS=1``)."""
        return counters.snapshot()

    app.include_router(router, prefix="/api/v1")
    return counters
