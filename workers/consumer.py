"""The node worker's Celery consumer: reconnects to a returning broker within seconds.

Celery retries a lost broker connection with kombu's default pauses (2, 4, 6 ...
up to 30 s between tries), so a worker may ignore a broker that came back for half
a minute after a long outage (a Redis restart, a Sentinel failover). This consumer
retries every :data:`RETRY_START` s at first and never waits more than
:data:`RETRY_MAX` s between tries. Installed by :func:`workers.app.make_app`
(``worker_consumer``).

It also closes its broker channels before kombu drops their client after a connection
loss (:mod:`workers.brokerloss`, a kombu 5.7.0 workaround): without that a Redis
restart killed the worker.

Task events (Flower's view of tasks: received, started, succeeded, failed) are
published in batches: Celery (5.7.0) buffers them and publishes the buffer on the
event loop's next turn, one Redis PUBLISH per turn, which at load is about one per
event and a third of the main process's CPU. This consumer publishes the buffer
:data:`EVENT_FLUSH_DELAY` s after its first event instead (Celery still flushes at
once when 24 wait), and before the worker shuts down: Flower sees each event at most
that much later, and every one of them.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from celery.worker.consumer import Consumer

from workers.brokerloss import close_channels_on_collect
from workers.keptclient import keep_transport_on_switch

#: Seconds before the first reconnection try, added per try, and the longest pause.
RETRY_START = 0.5
RETRY_STEP = 0.5
RETRY_MAX = 2.0
#: Seconds a task event waits for others to be published with it (one PUBLISH per batch).
EVENT_FLUSH_DELAY = 0.05


class QuickReconnectConsumer(Consumer):
    """Celery's consumer with shorter pauses between broker reconnection tries, which
    survives a broker restart (see :mod:`workers.brokerloss`) and publishes task events
    in batches."""

    #: When the pending batch's flush was scheduled (monotonic s); 0: none pending.
    _event_flush_at = 0.0

    def on_send_event_buffered(self) -> None:
        if self.hub is None:
            super().on_send_event_buffered()
            return
        now = time.monotonic()
        # A flush scheduled long ago was dropped with the timer's entries (a reconnection
        # clears them): schedule another.
        if not self._event_flush_at or now - self._event_flush_at > 4 * EVENT_FLUSH_DELAY + 1.0:
            self._event_flush_at = now
            self.hub.call_later(EVENT_FLUSH_DELAY, self._flush_buffered_events)

    def _flush_buffered_events(self) -> None:
        self._event_flush_at = 0.0
        self._flush_events()

    def on_close(self) -> None:
        super().on_close()
        self._event_flush_at = 0.0  # a scheduled flush may have gone with the timer's entries

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):  # the broker may be gone: shutting down goes on
            self._flush_events()  # the last batch, before the event dispatcher closes
        super().shutdown()

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        if self.connection is not None:
            close_channels_on_collect(self.connection)
        super().on_connection_error_after_connected(exc)

    def ensure_connected(self, conn: Any) -> Any:
        ensure = conn.ensure_connection

        def quicker(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("interval_start", RETRY_START)
            kwargs.setdefault("interval_step", RETRY_STEP)
            kwargs.setdefault("interval_max", RETRY_MAX)
            return ensure(*args, **kwargs)

        conn.ensure_connection = quicker
        keep_transport_on_switch(conn)  # a Sentinel list's next URL keeps our transport
        return super().ensure_connected(conn)
