"""Set up a dmg process's log from its settings: level, format, fields, secrets."""

from __future__ import annotations

import logging

import settings as settings_mod
from dmg.logformat import LogFormatError, configure
from dmg.quietlogs import quiet_request_logs


def setup_logging(settings: settings_mod.Settings, *, secrets: tuple[str, ...] = ()) -> None:
    """Log to stderr at ``DMG_LOG_LEVEL`` in ``DMG_LOG_FORMAT`` (:mod:`dmg.logformat`) for
    long-running commands; the settings' secrets and ``secrets`` never show."""
    level = logging.getLevelName(settings.log_level.upper())
    if not isinstance(level, int):
        raise settings_mod.SettingsError(
            f"DMG_LOG_LEVEL={settings.log_level!r} is not a log level; use DEBUG, INFO, WARNING or ERROR")
    try:
        configure(level=level, log_format=settings.log_format,
                  fields={"node": settings.node_name, "gateway": settings.gateway},
                  secrets=[*settings_mod.secrets_of(settings), *secrets])
    except LogFormatError as exc:
        raise settings_mod.SettingsError(str(exc)) from None
    quiet_request_logs(level)
