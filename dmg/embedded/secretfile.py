"""The local secrets of a data dir: each generated once into a file of mode 0600.

Flower's password (``<data dir>/flower-password``) and the embedded Redis's
(``<data dir>/redis-password``) are kept this way, as the cloud keeps its API token
(``<data dir>/cloud/api-token``). A secret reaches a process through a file or its
environment, never its command line (``ps`` shows command lines).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def read_or_create(path: Path, *, nbytes: int = 18) -> str:
    """The secret in ``path``; a new random one written there (mode 0600) when the file
    is missing or empty. A file found with wider permissions is narrowed to 0600."""
    with contextlib.suppress(FileNotFoundError):
        existing = path.read_text().strip()
        if existing:
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
            return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    return secret
