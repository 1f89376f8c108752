"""``httpx`` without its command-line client: ``from dmg.httpxlite import httpx``.

httpx 0.29.0 imports its command-line client from its ``__init__`` (``from ._main import
main``) whenever rich, pygments and click are installed: ~5 MiB in every process that
talks to the cloud (a node's agent and Celery worker), for a command dmg never runs.
With that one submodule marked missing before httpx is first imported, httpx defines
its stub ``main`` instead; nothing else of httpx changes. (A library bug worked around
here, not patched: drop this module once httpx imports ``_main`` lazily.)
"""

from __future__ import annotations

import sys

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import httpx  # noqa: E402

__all__ = ["httpx"]
