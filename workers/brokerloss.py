"""Closing a worker's broker channels when Redis goes away, so the worker survives it.

Works around kombu 5.7.0 (Redis transport; checked with celery 5.7.0): a Redis restart
killed every node's Celery worker ("Restoring N unacknowledged message(s)", then
``CRITICAL Unrecoverable error: AttributeError("'NoneType' object has no attribute
'hostname'")``). On a lost connection Celery calls ``Connection.collect()`` and then
``Connection.close()``. In ``collect()``:

1. closing the task channel (the default channel) first reads the pending ``BRPOP``
   reply, which raises ``ConnectionError``; kombu swallows it, and the channel stays
   open with its unacknowledged messages;
2. the transport then closes its channels newest first; closing the broadcast
   (remote-control, "pidbox") channel deletes its fanout binding, which raises
   ``ConnectionError`` too and ends the loop: the task channel is skipped again;
3. kombu sets ``transport.client = None`` all the same.

``close()`` then closes the task channel for real: ``restore_unacked`` needs a Redis
client, builds a pool from ``_connparams``, reads ``transport.client.hostname`` and
raises ``AttributeError``, which is not a connection error, so Celery's consumer dies.

:func:`close_channels_on_collect` makes ``collect()`` first close every channel of the
connection while the transport still knows its client, each once more if the first try
was cut short by the pending read (kombu clears that state on the way out). A channel
closed this way restores its unacknowledged messages if Redis is back already, else
leaves them in Redis's unacked set (kombu restores those after the visibility timeout,
and the dispatcher's recovery does not wait for that). Installed by
:class:`workers.consumer.QuickReconnectConsumer`. Remove once kombu closes every
channel before it drops the client.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: Tries per channel: the first one may only consume the pending BRPOP read and fail.
CLOSE_TRIES = 2


def open_channels(connection: Any) -> list[Any]:
    """Every channel of ``connection`` not closed yet: its default channel first, then
    the transport's (kombu's virtual transports keep them in ``channels`` and
    ``_avail_channels``)."""
    transport = getattr(connection, "_transport", None)
    found: list[Any] = []
    candidates = [getattr(connection, "_default_channel", None),
                  *getattr(transport, "channels", ()), *getattr(transport, "_avail_channels", ())]
    for channel in candidates:
        if channel is not None and not getattr(channel, "closed", True) and channel not in found:
            found.append(channel)
    return found


def close_channels(connection: Any) -> list[Any]:
    """Close every open channel of ``connection`` (see the module docstring), ignoring the
    connection and channel errors of a broker that is gone. Returns the channels still
    open afterwards (none, unless kombu changed)."""
    errors = tuple(connection.connection_errors) + tuple(connection.channel_errors)
    left = []
    for channel in open_channels(connection):
        for _ in range(CLOSE_TRIES):
            try:
                channel.close()
            except errors as exc:
                log.debug("closing a broker channel after the connection loss: %r", exc)
            if getattr(channel, "closed", True):
                break
        else:
            left.append(channel)
    return left


def close_channels_on_collect(connection: Any) -> None:
    """Make ``connection.collect()`` (called by Celery after a connection loss) close every
    channel before kombu drops the transport's client. Idempotent per connection."""
    collect = connection.collect
    if getattr(collect, "closes_channels_first", False):
        return

    def collect_after_closing(*args: Any, **kwargs: Any) -> Any:
        left = close_channels(connection)
        if left:
            log.warning("%d broker channel(s) could not be closed after the connection loss", len(left))
        return collect(*args, **kwargs)

    collect_after_closing.closes_channels_first = True  # type: ignore[attr-defined]
    connection.collect = collect_after_closing
