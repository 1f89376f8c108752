"""``--workers N`` (``DMG_CLOUD_WORKERS``): N processes serving the cloud's one port.

uvicorn's own supervisor does it (``uvicorn.supervisors.Multiprocess``, what
``uvicorn.run(workers=N)`` uses): the parent binds the port once, spawns N workers
that accept on it, and starts a new one when a worker dies. Each worker builds the
app from :func:`worker_app`, handed to it pickled with uvicorn's config through the
spawn pipe (so the settings and their secrets travel as the parent's stdin did,
never in ``ps`` or the environment). The parent migrates the database once before
any worker starts.

Everything a worker keeps in memory is correct across workers: claim long-polls
and the token cache hear the others through PostgreSQL LISTEN/NOTIFY
(:mod:`dmg.cloud.api.listen`); the debug counters are summed over the workers
(:mod:`dmg.cloud.api.metrics`); portal sessions, CSRF tokens (derived from the API
token and the session) and the Prometheus figures live in the database or are
derived from it. Several workers need PostgreSQL: SQLite has one writer at a time,
so :func:`check_workers` refuses them there.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from dmg.errors import BadInput
from settings import Settings

#: More workers than this is a typing mistake on any machine dmg runs on.
MAX_WORKERS = 64


def check_workers(settings: Settings) -> int:
    """The number of workers to start; BadInput (one line) for a number out of range, or
    more than one on SQLite. Checked before anything else starts (nothing is logged)."""
    workers = settings.cloud_workers
    dialect = _backend(settings.cloud_db_url)
    if not 1 <= workers <= MAX_WORKERS:
        raise BadInput(f"the cloud's workers must be 1 to {MAX_WORKERS}, not {workers}",
                       hint="set --workers (DMG_CLOUD_WORKERS)")
    if workers > 1 and dialect not in ("postgresql", ""):
        raise BadInput(f"--workers {workers} needs PostgreSQL: SQLite has one writer, so it is served "
                       "by one process",
                       hint="give --db postgresql://USER@HOST/DB (DMG_CLOUD_DB), or --workers 1")
    return workers


def _backend(url: str) -> str:
    """``postgresql``, ``sqlite``, ... ("" for a URL that :class:`dmg.cloud.db.Database`
    will refuse with its own message)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url.replace("postgres://", "postgresql://", 1)).get_backend_name()
    except ArgumentError:
        return ""


def worker_app(settings: Settings, metrics_dir: str) -> Any:
    """Build one worker's app (uvicorn calls it in the worker: ``factory=True``)."""
    from dmg.cloud.api import create_app
    from dmg.gcfreeze import keep_startup_objects
    from dmg.logsetup import setup_logging

    setup_logging(settings)
    app = create_app(settings, migrate=False, metrics_dir=metrics_dir)
    keep_startup_objects()  # built for the worker's life: out of every later collection
    return app


def fresh_metrics_dir(settings: Settings, pid: int) -> str:
    """An empty directory for the workers' shared debug counters (this serve's own)."""
    from dmg.cloud.keys import cloud_dir

    path = Path(cloud_dir(settings)) / f"metrics-{pid}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)
    return str(path)
