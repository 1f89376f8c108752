"""Per-request log lines of HTTP clients belong at DEBUG.

httpx (and httpcore under it) log every request at INFO: on a node that is one line
per heartbeat and per claim long-poll, every second or two, burying what matters.
:func:`quiet_request_logs` raises their threshold to WARNING unless the process logs
at DEBUG, where every request is shown again; :func:`quiet_loggers` does the same for
any other loggers (the Celery worker's per-task lines, :mod:`workers.logsetup`).
"""

from __future__ import annotations

import logging

#: Loggers that write one line per HTTP request.
REQUEST_LOGGERS = ("httpx", "httpcore")


def quiet_request_logs(level: int | str) -> None:
    """Show per-request lines only when ``level`` (a number or a name) is DEBUG or lower."""
    quiet_loggers(level, REQUEST_LOGGERS)


def quiet_loggers(level: int | str, names: tuple[str, ...]) -> None:
    """The loggers ``names`` write only WARNING and above unless ``level`` (a number or a
    name) is DEBUG or lower, where they write everything again."""
    number = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(number, int):
        return
    for name in names:
        logging.getLogger(name).setLevel(logging.NOTSET if number <= logging.DEBUG else logging.WARNING)
