"""The long-poll on a run's state (users): ``GET /runs/{run_id}/wait``.

``dmg pipeline run --wait`` follows a run with it instead of polling every half
second, so a short run is seen to end within tens of milliseconds.

Contract: the route returns the run (the shape of ``GET /runs/{run_id}``) as soon as
its status differs from ``status`` — at once when ``status`` is empty or already
different — or after ``timeout`` s (at most :data:`MAX_WAIT`) with the run as it is
then: a timeout is an ordinary 200, never an error. 404 for an unknown run. It reads
only (one indexed ``SELECT status`` per check), so any number of cloud processes
sharing the database answer it alike; a change is seen within :data:`FAST_CHECK` s
during the first :data:`FAST_FOR` s of a wait and within :data:`SLOW_CHECK` s after
(a long run costs the database a few reads a second per waiting user).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

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


def run_status(svc: CloudService, run_id: str) -> str:
    """The run's status; NotFound for an unknown run (blocking: reads the database)."""
    with svc.db.read() as session:
        status = session.execute(select(Run.status).where(Run.id == run_id)).scalar_one_or_none()
    if status is None:
        raise NotFound(f"run {run_id!r} does not exist", hint="`dmg runs list` shows the runs")
    return str(status)


@router.get("/runs/{run_id}/wait", tags=["runs"])
async def wait_for_run_change(
    run_id: str, svc: Service,
    status: str = Query(default="", max_length=32,
                        description="the status the caller last saw; empty: answer at once"),
    timeout: float = Query(default=10.0, ge=0, le=MAX_WAIT, description="seconds to wait at most"),
) -> dict[str, Any]:
    """Return the run when its status is no longer ``status``, or after ``timeout`` s
    (the run as it is then). 404 for an unknown run."""
    started = time.monotonic()
    while True:
        current = await run_in_threadpool(run_status, svc, run_id)
        waited = time.monotonic() - started
        if current != status or waited >= timeout:
            break
        pause = FAST_CHECK if waited < FAST_FOR else SLOW_CHECK
        await asyncio.sleep(min(pause, timeout - waited))
    run: dict[str, Any] = await run_in_threadpool(svc.run, run_id)
    return run
