"""Flower in an embedded site: its command line, its environment and its password.

Flower watches the site's broker and shows every node's live load. It asks for basic
auth: the user is ``settings.flower_user``; the password is ``settings.flower_password``
or, when none is set, one generated once into ``<data dir>/flower-password`` (mode 0600)
and kept for every later start on that data dir. The password goes to Flower through
its environment, never on its command line (``ps`` shows command lines).
"""

from __future__ import annotations

import sys

from dmg.embedded.secretfile import read_or_create
from dmg.embedded.tls import SiteTLS
from settings import Settings


def flower_password(settings: Settings) -> str:
    """``settings.flower_password``, else the one generated once into the data dir (0600)."""
    if settings.flower_password:
        return settings.flower_password
    return read_or_create(settings.data_dir / "flower-password")


def password_hint(settings: Settings) -> str:
    """Where the user finds Flower's password: the variable that set it, or the file."""
    return "DMG_FLOWER_PASSWORD" if settings.flower_password else str(settings.data_dir / "flower-password")


def flower_command(host: str, port: int, *, tls: SiteTLS | None = None) -> list[str]:
    """The command line of Flower on ``host:port`` over the site's Celery app, started by
    :mod:`dmg.cli.flower_start` (which first checks the broker's certificate); on HTTPS
    with ``tls``'s certificate."""
    https = [f"--certfile={tls.cert}", f"--keyfile={tls.key}"] if tls is not None else []
    return [sys.executable, "-m", "dmg.cli.flower_start", f"--address={host}", f"--port={port}", *https]


def flower_environ(settings: Settings, gateway: str) -> dict[str, str]:
    """What Flower needs in its environment beyond the site's settings: its basic auth, and
    the gateway whose Celery keys it watches. Creates the password file if needed."""
    return {"FLOWER_BASIC_AUTH": f"{settings.flower_user}:{flower_password(settings)}",
            "DMG_GATEWAY": gateway}
