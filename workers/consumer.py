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
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer

from workers.brokerloss import close_channels_on_collect

#: Seconds before the first reconnection try, added per try, and the longest pause.
RETRY_START = 0.5
RETRY_STEP = 0.5
RETRY_MAX = 2.0


class QuickReconnectConsumer(Consumer):
    """Celery's consumer with shorter pauses between broker reconnection tries, which
    survives a broker restart (see :mod:`workers.brokerloss`)."""

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
        return super().ensure_connected(conn)
