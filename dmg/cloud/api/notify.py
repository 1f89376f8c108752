"""Wakes a gateway's waiting long-polls when a run is queued (in this process).

Used from the event loop only. On PostgreSQL, a run queued by another cloud process
sharing the database wakes them too: that process NOTIFYs, :mod:`.listen` hears it
here and calls :meth:`RunNotifier.notify`; the long-poll's periodic re-check is only
the fallback while the listener is disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib


class RunNotifier:
    def __init__(self) -> None:
        self._events: dict[int, asyncio.Event] = {}

    def notify(self, gateway_id: int) -> None:
        event = self._events.pop(gateway_id, None)
        if event is not None:
            event.set()

    async def wait(self, gateway_id: int, timeout: float) -> None:
        """Return when :meth:`notify` is called for the gateway or after ``timeout`` s."""
        event = self._events.setdefault(gateway_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
