"""What other cloud processes sharing the PostgreSQL database tell this one (LISTEN).

Each cloud process on PostgreSQL keeps one connection of its own that LISTENs on
:data:`~dmg.cloud.service.RUNS_CHANNEL` (a gateway's runs were queued or cancelled:
its waiting claim long-polls are woken, :class:`.notify.RunNotifier`) and
:data:`~dmg.cloud.service.TOKENS_CHANNEL` (a node was removed: the token cache is
cleared; on PostgreSQL the cache is off anyway, :mod:`dmg.cloud.service.tokens`) and
:data:`~dmg.cloud.service.derive.RUN_STATUS_CHANNEL` (a run's status changed: the run
long-polls of this process check at once, :class:`.runwait.RunChanges`, so
``dmg pipeline run --wait`` sees a run end within milliseconds whichever process took
the report that ended it).
The senders NOTIFY inside their own transaction (:meth:`dmg.cloud.db.Database.publish`),
so a notice arrives at commit, and is never sent for a rolled-back change.

When the connection is lost, claims and run waits fall back to their periodic re-check until the listener is
connected again (tried every :data:`RECONNECT_EVERY` s). SQLite needs none of this:
it is served by one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

from dmg.cloud.api.notify import RunNotifier
from dmg.cloud.api.runwait import RunChanges
from dmg.cloud.service import RUNS_CHANNEL, TOKENS_CHANNEL, CloudService
from dmg.cloud.service.derive import RUN_STATUS_CHANNEL

log = logging.getLogger(__name__)

RECONNECT_EVERY = 1.0


async def listen(svc: CloudService, notifier: RunNotifier, *, ready: asyncio.Event | None = None,
                 run_changes: RunChanges | None = None) -> None:
    """Listen until cancelled, reconnecting after any error (never raises but CancelledError)."""
    lost_logged = False
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(svc.db.libpq_url, autocommit=True) as conn:
                await conn.execute(f"LISTEN {RUNS_CHANNEL}")
                await conn.execute(f"LISTEN {TOKENS_CHANNEL}")
                await conn.execute(f"LISTEN {RUN_STATUS_CHANNEL}")
                if run_changes is not None:  # a status changed while nobody listened
                    run_changes.changed()
                if lost_logged:
                    log.info("listening to the other cloud processes again")
                lost_logged = False
                if ready is not None:
                    ready.set()
                async for notice in conn.notifies():
                    _heard(svc, notifier, run_changes, notice.channel, notice.payload)
        except (psycopg.Error, OSError) as exc:
            svc.tokens.listening(False)
            if not lost_logged:
                log.warning("not listening to the other cloud processes (%s): tokens are read from "
                            "the database, claims re-check every few tenths of a second", type(exc).__name__)
                lost_logged = True
        except asyncio.CancelledError:
            svc.tokens.listening(False)
            raise
        await asyncio.sleep(RECONNECT_EVERY)


def _heard(svc: CloudService, notifier: RunNotifier, run_changes: RunChanges | None, channel: str,
           payload: str) -> None:
    if channel == RUN_STATUS_CHANNEL:
        if run_changes is not None:
            run_changes.changed()
    elif channel == TOKENS_CHANNEL:
        svc.tokens.clear()
    elif channel == RUNS_CHANNEL:
        with contextlib.suppress(ValueError):
            notifier.notify(int(payload))


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
