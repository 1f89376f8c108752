"""``python -m dmg.cli.flower_start [flower options]``: Flower over the site's Celery app.

Checks the site broker's certificate first (:func:`dmg.site.connection.check_broker_certificate`):
a wrong CA or host name ends Flower's start with one line instead of a traceback per
reconnection; then becomes ``celery -A workers.app flower ...`` (same pid).
"""

from __future__ import annotations

import os
import sys

import settings
from dmg.errors import DmgError
from dmg.site.connection import check_broker_certificate


def main(argv: list[str]) -> int:
    try:
        check_broker_certificate(settings.load())
    except (DmgError, settings.SettingsError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    python = sys.executable
    os.execv(python, [python, "-m", "celery", "-A", "workers.app", "flower", *argv])
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
