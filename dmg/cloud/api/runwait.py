"""The long-poll on a run's state (users): ``GET /runs/{run_id}/wait``.

``dmg pipeline run --wait`` follows a run with it instead of polling every half
second, so a short run is seen to end at once.

Contract: the route returns the run (the shape of ``GET /runs/{run_id}``) as soon as
its status differs from ``status`` — at once when ``status`` is empty or already
different — or after ``timeout`` s (at most :data:`MAX_WAIT`) with the run as it is
then: a timeout is an ordinary 200, never an error. 404 for an unknown run. It reads
only (one indexed ``SELECT status`` per check), so any number of cloud processes
sharing the database answer it alike.

When it checks: every request that may change a run (any ``POST``, ``PUT``, ``PATCH`` or
``DELETE`` answered by this process: a node's report batch, a plan, a cancel) wakes the
waiting long-polls as it ends (:class:`WakeRunWaiters`), so a run that ends here is seen
within a millisecond or two. On PostgreSQL, a run whose status changes in another cloud
process sharing the database wakes them too: that process NOTIFYs at commit
(:data:`dmg.cloud.service.derive.RUN_STATUS_CHANNEL`) and :mod:`.listen` calls
:meth:`RunChanges.changed` here, within a few milliseconds. Anything else (a background
sweep; the listener's connection lost) is seen by the periodic check: within
:data:`FAST_CHECK` s during the first :data:`FAST_FOR` s of a wait and within
:data:`SLOW_CHECK` s after. A waiter checks at most once per :data:`MIN_GAP` s however
many writes wake it, so a busy cloud costs each waiting user a bounded number of reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from starlette.types import ASGIApp, Receive, Scope, Send

from dmg.cloud.api.auth import Service, require_user
from dmg.cloud.models import Run
from dmg.cloud.service import CloudService
from dmg.errors import NotFound

router = APIRouter(dependencies=[Depends(require_user)])

#: The longest a single wait may last (s); the client asks again.
MAX_WAIT = 30.0
FAST_CHECK = 0.02
FAST_FOR = 5.0
SLOW_CHECK = 0.2
MIN_GAP = 0.005
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class RunChanges:
    """A wake-up for the long-polls of this process: :meth:`changed` sets the event every
    waiter took before its last check. Used from the event loop only."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def event(self) -> asyncio.Event:
        """The event the next :meth:`changed` sets (take it before checking the run)."""
        return self._event

    def changed(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()


class WakeRunWaiters:
    """ASGI middleware: wakes the run long-polls (:class:`RunChanges`) when a write request
    ends, its transaction committed (a run's status changes only in one)."""

    def __init__(self, app: ASGIApp, *, changes: RunChanges) -> None:
        self.app = app
        self.changes = changes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in _WRITES:
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.changes.changed()


def run_status(svc: CloudService, run_id: str) -> str:
    """The run's status; NotFound for an unknown run (blocking: reads the database)."""
    with svc.db.read() as session:
        status = session.execute(select(Run.status).where(Run.id == run_id)).scalar_one_or_none()
    if status is None:
        raise NotFound(f"run {run_id!r} does not exist", hint="`dmg runs list` shows the runs")
    return str(status)


async def _until_woken(changes: RunChanges | None, event: asyncio.Event | None, seconds: float) -> None:
    """Return when ``event`` is set (a write ended) or after ``seconds``."""
    if changes is None or event is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


@router.get("/runs/{run_id}/wait", tags=["runs"])
async def wait_for_run_change(
    run_id: str, svc: Service, request: Request,
    status: str = Query(default="", max_length=32,
                        description="the status the caller last saw; empty: answer at once"),
    timeout: float = Query(default=10.0, ge=0, le=MAX_WAIT, description="seconds to wait at most"),
) -> dict[str, Any]:
    """Return the run when its status is no longer ``status``, or after ``timeout`` s
    (the run as it is then). 404 for an unknown run."""
    changes: RunChanges | None = getattr(request.app.state, "run_changes", None)
    started = time.monotonic()
    while True:
        event = changes.event() if changes is not None else None  # before the check: no wake-up lost
        checked = time.monotonic()
        current = await run_in_threadpool(run_status, svc, run_id)
        waited = time.monotonic() - started
        if current != status or waited >= timeout:
            break
        pause = FAST_CHECK if waited < FAST_FOR else SLOW_CHECK
        await _until_woken(changes, event, min(pause, timeout - waited))
        gap = MIN_GAP - (time.monotonic() - checked)
        if gap > 0:
            await asyncio.sleep(gap)
    run: dict[str, Any] = await run_in_threadpool(svc.run, run_id)
    return run
