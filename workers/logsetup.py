"""The Celery worker's log in the site's format (``DMG_LOG_FORMAT``, :mod:`dmg.logformat`).

Celery sets up the worker's loggers itself (``worker_hijack_root_logger`` off: it adds
its handlers); these hooks, connected in :mod:`workers.app`, then give those handlers
dmg's formatter (JSON lines, or Celery's text with secrets blanked out), put the node
and gateway on every line and, while a task runs, its shard, attempt and activity run.

Celery's own line per task ("Task ... received" in the main process, "Task ...
succeeded in ..." in the pool) is written only when the worker logs at DEBUG
(:data:`TASK_LOGGERS`): dmg logs each shard's end itself ("shard succeeded" or "shard
failed", with shard, attempt, node and the seconds it ran; "shard started" is DEBUG), and
Celery's two lines were about a tenth of the worker's CPU per one-file shard (a GIL
profile, Celery 5.7.0); dmg's start line was another 3-4 % of a pool process's.
Celery's warnings and errors (a task that raised, a lost worker process) stay.
"""

from __future__ import annotations

import contextlib
import logging
from contextvars import Token
from typing import Any

import settings as dmg_settings
from dmg import logformat
from dmg.quietlogs import quiet_loggers

_bound: dict[str, Token[Any]] = {}

#: Celery's loggers that write an INFO line per task: the received line (the worker's main
#: process), the succeeded, retried and rejected lines (the pool process).
TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


def quiet_task_logs(level: int | str) -> None:
    """Celery's per-task INFO lines only when the worker logs at ``level`` DEBUG or lower.
    Before the worker builds its consumer and its pool (Celery decides once, then)."""
    quiet_loggers(level, TASK_LOGGERS)


def format_worker_logger(logger: logging.Logger) -> None:
    """Give ``logger``'s handlers the site's format; hide this process's secrets."""
    settings = dmg_settings.load()
    secrets = dmg_settings.secrets_of(settings)
    if settings.node_name:
        try:
            from dmg import registration

            secrets.append(registration.load(settings.data_dir, settings.node_name).token)
        except Exception:  # not registered here: no token to hide
            pass
    logformat.hide_in_logs(secrets)
    logformat.configure_fields({"node": settings.node_name, "gateway": settings.gateway})
    logformat.use_format(logger, settings.log_format)


def bind_task(task_id: str, args: Any) -> None:
    """Before a task runs: its shard and attempt (``copy_shard(shard_id, attempt, ...)``) on
    every line it logs, until :func:`unbind_task`."""
    if isinstance(args, list | tuple) and len(args) >= 2 and isinstance(args[0], str):
        _bound[task_id] = logformat.bind(**logformat.shard_fields(args[0], args[1]))


def unbind_task(task_id: str) -> None:
    token = _bound.pop(task_id, None)
    if token is not None:
        # ValueError: bound in another context (a thread pool), nothing to undo in this one
        with contextlib.suppress(ValueError):
            logformat.unbind(token)
