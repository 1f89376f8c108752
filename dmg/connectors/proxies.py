"""The HTTP proxy this process's cloud-store clients use: the gateway's, as its node applied it.

The node agent writes the gateway's proxy to a file of the node (:mod:`dmg.proxy`); every
process of the node calls :func:`use` with that file once, and each S3 or Azure client made
afterwards reads :func:`current` (a change reaches a running worker without a restart: the
client caches are keyed by the proxy). A process that never called :func:`use` (the CLI, the
cloud) has no proxy.
"""

from __future__ import annotations

import threading
from pathlib import Path

from dmg.errors import safe_url

_lock = threading.Lock()
_path: Path | None = None
_cached: tuple[int, str] = (-1, "")


def use(path: Path) -> None:
    """Make :func:`current` read the proxy applied at ``path``."""
    global _path, _cached
    with _lock:
        _path, _cached = path, (-1, "")


def read(path: Path) -> str:
    """The proxy applied at ``path`` ("" for none)."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""


def current() -> str:
    """The proxy URL this node applied ("" for none, or before :func:`use`)."""
    global _cached
    with _lock:
        if _path is None:
            return ""
        try:
            mtime = _path.stat().st_mtime_ns
        except FileNotFoundError:
            return ""
        if mtime != _cached[0]:
            _cached = (mtime, read(_path))
        return _cached[1]


def proxy_problem(url: str, detail: str = "") -> str:
    """The words for a proxy that cannot be reached: names "proxy" and the URL without
    credentials."""
    return f"cannot connect through proxy {safe_url(url)}" + (f" ({detail})" if detail else "")
