"""The node's concurrent-job limit as set at runtime, kept in ``<node dir>/limit``.

Apart from :mod:`workers.agent.scaling` (which imports Celery's worker package), so that
the node agent reads the limit at start without loading Celery's worker into its process.
"""

from __future__ import annotations

import os
from pathlib import Path

LIMIT_FILE = "limit"


def persisted_limit(node_dir: Path) -> int | None:
    """The limit last set at runtime for this node, or None."""
    try:
        value = int((node_dir / LIMIT_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return value if value > 0 else None


def persist_limit(node_dir: Path, limit: int) -> None:
    """Write ``limit`` atomically (staging file + rename)."""
    node_dir.mkdir(parents=True, exist_ok=True)
    staging = node_dir / f".{LIMIT_FILE}.tmp"
    staging.write_text(f"{limit}\n")
    os.replace(staging, node_dir / LIMIT_FILE)
