"""Flower in an embedded site: its command line, its environment and its password.

Flower watches the site's broker and shows every node's live load. It asks for basic
auth: the user is ``settings.flower_user``; the password is ``settings.flower_password``
or, when none is set, one generated once into ``<data dir>/flower-password`` (mode 0600)
and kept for every later start on that data dir. The password goes to Flower through
its environment, never on its command line (``ps`` shows command lines).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys

from settings import Settings


def flower_password(settings: Settings) -> str:
    """``settings.flower_password``, else the one generated once into the data dir (0600)."""
    if settings.flower_password:
        return settings.flower_password
    path = settings.data_dir / "flower-password"
    with contextlib.suppress(FileNotFoundError):
        existing = path.read_text().strip()
        if existing:
            return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return password


def password_hint(settings: Settings) -> str:
    """Where the user finds Flower's password: the variable that set it, or the file."""
    return "DMG_FLOWER_PASSWORD" if settings.flower_password else str(settings.data_dir / "flower-password")


def flower_command(host: str, port: int) -> list[str]:
    """The command line of Flower on ``host:port`` over the site's Celery app."""
    return [sys.executable, "-m", "celery", "-A", "workers.app", "flower",
            f"--address={host}", f"--port={port}"]


def flower_environ(settings: Settings, gateway: str) -> dict[str, str]:
    """What Flower needs in its environment beyond the site's settings: its basic auth, and
    the gateway whose Celery keys it watches. Creates the password file if needed."""
    return {"FLOWER_BASIC_AUTH": f"{settings.flower_user}:{flower_password(settings)}",
            "DMG_GATEWAY": gateway}
