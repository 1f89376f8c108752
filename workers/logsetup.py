"""The Celery worker's log in the site's format (``DMG_LOG_FORMAT``, :mod:`dmg.logformat`).

Celery sets up the worker's loggers itself (``worker_hijack_root_logger`` off: it adds
its handlers); these hooks, connected in :mod:`workers.app`, then give those handlers
dmg's formatter (JSON lines, or Celery's text with secrets blanked out), put the node
and gateway on every line and, while a task runs, its shard, attempt and activity run.
"""

from __future__ import annotations

import contextlib
import logging
from contextvars import Token
from typing import Any

import settings as dmg_settings
from dmg import logformat

_bound: dict[str, Token[Any]] = {}


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
