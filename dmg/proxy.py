"""The gateway's HTTP proxy as this node applied it.

The proxy is set once per gateway in the cloud (``dmg gateway proxy NAME URL``) and
delivered to every node in the reply to its heartbeat. The node agent writes it to
:func:`proxy_path` (mode 0600: the URL may hold credentials) and every process of the
node (the agent, the dispatcher, the Celery worker and its pool) reads it from there
with :func:`current`, so a change reaches a running worker without a restart.

Applied to the node's cloud traffic (:class:`dmg.cloud.client.CloudClient`) and its
cloud-store traffic (S3 and Azure Blob clients); never to the site broker (Redis) nor to
file shares and SQL databases, which live inside the site. An unreachable proxy gives an
error that says "proxy" and the URL without its credentials (:func:`proxy_problem`).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from dmg.connectors.proxies import current, proxy_problem, read, use
from dmg.errors import BadInput
from dmg.fingerprint import redact_url

__all__ = ["apply", "check_proxy_url", "current", "proxy_path", "proxy_problem", "read", "use"]

FILE_NAME = "proxy"
SCHEMES = ("http", "https")


def check_proxy_url(url: str) -> str:
    """``url`` if it is an ``http(s)://host[:port]`` proxy URL; BadInput (one line, the URL
    shown without credentials) otherwise. An empty URL clears the proxy."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise BadInput(f"proxy URL {redact_url(url)} is malformed",
                       hint="e.g. http://proxy.example:3128") from None
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise BadInput(f"proxy URL {redact_url(url)} is not an http:// or https:// URL with a host",
                       hint="e.g. http://proxy.example:3128")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BadInput(f"proxy URL {redact_url(url)} must have no path",
                       hint="e.g. http://proxy.example:3128")
    del port
    return url


def proxy_path(node_dir: Path) -> Path:
    return node_dir / FILE_NAME


def apply(path: Path, url: str) -> bool:
    """Write ``url`` as the applied proxy at ``path`` (atomically, mode 0600); -> whether
    it changed. An empty URL removes the file."""
    if read(path) == url:
        return False
    if not url:
        path.unlink(missing_ok=True)
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(url + "\n")
    os.replace(tmp, path)
    return True
