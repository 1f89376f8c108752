"""The cloud's FastAPI application."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI

from dmg.cloud import keys
from dmg.cloud.api import (
    credentials,
    files,
    history,
    listen,
    nodes,
    portal,
    portal_actions,
    portal_pages,
    runwait,
    users,
)
from dmg.cloud.api.auth import public
from dmg.cloud.api.errors import install_error_handlers
from dmg.cloud.api.guard import RequestGuard
from dmg.cloud.api.handoff import ClaimHandoff
from dmg.cloud.api.metrics import install_metrics
from dmg.cloud.api.notify import RunNotifier
from dmg.cloud.api.openapi import install_openapi
from dmg.cloud.api.prometheus import metrics_router
from dmg.cloud.db import Database
from dmg.cloud.service import CloudService
from dmg.logformat import hide_in_logs
from dmg.version import __version__
from settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, migrate: bool = True, metrics_dir: str = "") -> FastAPI:
    """Open the database at ``settings.cloud_db_url``, migrate it to head (unless
    ``migrate`` is False: a worker of :mod:`dmg.cloud.workers`, whose parent did), and
    build the app. ``metrics_dir``: where the worker processes share their debug
    counters (:mod:`.metrics`).

    Raises BadInput for an unusable database URL; SQLAlchemy errors if the database
    cannot be reached.
    """
    db = Database(settings.cloud_db_url)
    if migrate:
        db.migrate()
    service = CloudService(settings, db)
    notifier = RunNotifier()
    run_changes = runwait.RunChanges()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        listener = None
        if db.dialect == "postgresql":  # other processes may share the database
            listener = asyncio.create_task(listen.listen(service, notifier, run_changes=run_changes))
        yield
        if listener is not None:
            await listen.stop(listener)
        db.dispose()

    app = FastAPI(title="dmg cloud", version=__version__, lifespan=lifespan,
                  description="Control plane of dmg, the data movement gateway.")
    app.state.service = service
    app.state.api_token = keys.api_token(settings)
    hide_in_logs([app.state.api_token])
    app.state.notifier = notifier
    app.state.handoff = ClaimHandoff()
    app.state.run_changes = run_changes
    install_error_handlers(app)
    app.add_middleware(runwait.WakeRunWaiters, changes=run_changes)
    app.add_middleware(RequestGuard, routes=lambda: app.routes, max_body=settings.cloud_max_body,
                       state=lambda: app.state)

    health = APIRouter(dependencies=[Depends(public)])

    @health.get("/health", tags=["health"])
    def health_check() -> dict[str, Any]:
        """Unauthenticated liveness: ``{status: "ok", version, database}``."""
        return {"status": "ok", "version": __version__, "database": db.dialect}

    app.include_router(health, prefix="/api/v1")
    app.include_router(users.router, prefix="/api/v1")
    app.include_router(runwait.router, prefix="/api/v1")
    app.include_router(history.router, prefix="/api/v1")
    app.include_router(nodes.router, prefix="/api/v1")
    app.include_router(files.nodes, prefix="/api/v1")
    app.include_router(files.users, prefix="/api/v1")
    app.include_router(credentials.users, prefix="/api/v1")
    app.include_router(credentials.nodes, prefix="/api/v1")
    app.include_router(portal.router)
    app.include_router(metrics_router(service.metrics, open_to_all=settings.cloud_metrics_public))
    app.include_router(portal_pages.router)
    app.include_router(portal_actions.router)
    if settings.cloud_metrics:
        install_metrics(app, db.engine, shared_dir=metrics_dir)
    install_openapi(app)
    return app
