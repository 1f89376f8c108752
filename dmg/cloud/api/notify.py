"""Wakes a gateway's waiting long-polls when a run is queued (in this process).

Used from the event loop only. On PostgreSQL, a run queued by another cloud process
sharing the database wakes them too: that process NOTIFYs, :mod:`.listen` hears it
here and calls :meth:`RunNotifier.notify`; the long-poll's periodic re-check is only
the fallback while the listener is disconnected.

No notice is lost between two waits: a notice that comes while no long-poll waits (the
claim's own transaction is running, or its answer is on its way) is kept, and the next
:meth:`RunNotifier.wait` of that gateway returns at once (its claim finds the run one
transaction later, instead of after the periodic re-check).
"""

from __future__ import annotations

import asyncio
import contextlib


class RunNotifier:
    def __init__(self) -> None:
        self._events: dict[int, asyncio.Event] = {}

    def notify(self, gateway_id: int) -> None:
        """Wake the gateway's waiting long-polls, or the next one to wait."""
        event = self._events.get(gateway_id)
        if event is None:
            event = self._events[gateway_id] = asyncio.Event()
        event.set()

    async def wait(self, gateway_id: int, timeout: float) -> bool:
        """Return when :meth:`notify` is called for the gateway (or was called since the
        last wait returned): True; or after ``timeout`` s: False."""
        event = self._events.setdefault(gateway_id, asyncio.Event())
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
            return event.is_set()
        finally:
            # The notice is used up: every long-poll woken by this event has returned or
            # will once it runs, and later notices set a fresh one.
            if event.is_set() and self._events.get(gateway_id) is event:
                del self._events[gateway_id]
