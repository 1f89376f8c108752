"""What the cloud costs per unit of work: request, SQL statement and transaction counters.

Off by default; ``DMG_CLOUD_METRICS=1`` (``settings.cloud_metrics``) installs the
counters and serves them to users at ``GET /api/v1/debug/metrics``:
``{requests, requests_by_route: {"METHOD /path/{param}": n}, statements,
transactions, cpu_seconds, gc_full_collections, gc_frozen}``, summed over the cloud's worker
processes (``--workers N``; ``gc_frozen``: the fewest objects a worker keeps out of the
garbage collector's passes, :mod:`dmg.gcfreeze`).
``bench/activities.py`` reads it before and after a workload and divides by the
activities run.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Engine, event
from starlette.types import ASGIApp, Receive, Scope, Send

from dmg.cloud.api.auth import require_user

METRICS_PATH = "/api/v1/debug/metrics"


class CloudCounters:
    """Thread-safe counters of the cloud: of this process, or with ``shared_dir`` of
    every worker process of the cloud (prometheus_client's multiprocess mode: each
    process writes its own memory-mapped file there, a snapshot sums them all; the
    parent sets ``PROMETHEUS_MULTIPROC_DIR`` before it starts the workers,
    :mod:`dmg.cloud.workers`)."""

    def __init__(self, *, shared_dir: str = "") -> None:
        self.shared_dir = shared_dir
        self._registry = CollectorRegistry(auto_describe=True)
        self._statements = Counter("dmg_cloud_statements", "SQL statements", registry=self._registry)
        self._transactions = Counter("dmg_cloud_transactions", "SQL commits", registry=self._registry)
        self._requests = Counter("dmg_cloud_requests", "HTTP requests", ["route"], registry=self._registry)
        # "sum": a worker that died and was replaced still counts the CPU it used.
        self._cpu = Gauge("dmg_cloud_cpu_seconds", "CPU seconds of the process", registry=self._registry,
                          multiprocess_mode="sum")
        self._full_collections = Gauge("dmg_cloud_gc_full_collections", "full garbage collections",
                                       registry=self._registry, multiprocess_mode="sum")
        self._frozen = Gauge("dmg_cloud_gc_frozen", "objects frozen at start-up", registry=self._registry,
                             multiprocess_mode="min")
        self._frozen_noted = False

    def count_statement(self, *_args: Any) -> None:
        self._statements.inc()

    def count_transaction(self, *_args: Any) -> None:
        self._transactions.inc()

    def count_request(self, route: str) -> None:
        self._requests.labels(route).inc()
        self._process_figures()

    def _process_figures(self) -> None:
        self._cpu.set(time.process_time())
        self._full_collections.set(gc.get_stats()[-1]["collections"])
        if not self._frozen_noted:  # frozen before the first request; counting them walks them all
            self._frozen.set(gc.get_freeze_count())
            self._frozen_noted = True

    def snapshot(self) -> dict[str, Any]:
        self._process_figures()
        registry = self._registry
        if self.shared_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.shared_dir)
        by_route: dict[str, int] = {}
        totals: dict[str, Any] = {"statements": 0, "transactions": 0, "cpu_seconds": 0.0,
                                  "gc_full_collections": 0, "gc_frozen": 0}
        for family in registry.collect():
            for sample in family.samples:
                if sample.name == "dmg_cloud_requests_total":
                    route = sample.labels["route"]
                    by_route[route] = by_route.get(route, 0) + int(sample.value)
                elif sample.name in ("dmg_cloud_statements_total", "dmg_cloud_transactions_total"):
                    totals[sample.name[len("dmg_cloud_"):-len("_total")]] += int(sample.value)
                elif sample.name == "dmg_cloud_cpu_seconds":
                    totals["cpu_seconds"] += sample.value
                elif sample.name in ("dmg_cloud_gc_full_collections", "dmg_cloud_gc_frozen"):
                    totals[sample.name[len("dmg_cloud_"):]] = int(sample.value)
        return {"requests": sum(by_route.values()), "requests_by_route": by_route, **totals}


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


def install_metrics(app: FastAPI, engine: Engine, *, shared_dir: str = "") -> CloudCounters:
    """Count ``engine``'s statements and commits and ``app``'s requests; add the route
    (``shared_dir``: see :class:`CloudCounters`)."""
    counters = CloudCounters(shared_dir=shared_dir)
    event.listen(engine, "before_cursor_execute", counters.count_statement)
    event.listen(engine, "commit", counters.count_transaction)
    app.add_middleware(RequestCounter, counters=counters)
    router = APIRouter(dependencies=[Depends(require_user)])

    @router.get("/debug/metrics", tags=["health"])
    def metrics() -> dict[str, Any]:
        """Request, SQL statement and transaction counts and CPU seconds of the cloud's
        processes since it started, summed over its workers (only with ``DMG_CLOUD_METRICS=1``)."""
        return counters.snapshot()

    app.include_router(router, prefix="/api/v1")
    return counters
