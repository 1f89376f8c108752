"""When the nodes of an embedded site can take work, as the cloud shows them.

A node is ready when its worker is up (a job limit above 0, so the dispatcher can place
work on it) and it is Online, or Limited only because it cannot reach some stores (the
dispatcher sends work needing those elsewhere).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmg.errors import Fatal, Retryable

if TYPE_CHECKING:
    from dmg.cloud.client import CloudClient


def node_ready(row: dict[str, Any]) -> bool:
    """Whether a node (as ``list_nodes`` shows it) can take work: its worker is up and it
    is Online, or Limited only by stores it cannot reach (the dispatcher avoids those)."""
    if not row.get("limit"):
        return False
    if row.get("status") == "Online":
        return True
    stores = [str(s) for s in row.get("stores_unreachable") or []]
    if row.get("status") != "Limited" or not stores:
        return False
    about_stores = (*(f"store {s!r}" for s in stores), "cannot reach store(s) ")
    return all(str(reason).startswith(about_stores) for reason in row.get("reasons") or [])


def wait_nodes_ready(client: CloudClient, gateway: str, names: Sequence[str], *, timeout: float,
                     log_dir: Path, check_alive: Callable[[], None]) -> list[dict[str, Any]]:
    """Poll the cloud every 0.2 s until every node of ``names`` is ready; returns the rows
    of ``list_nodes``. ``check_alive`` is called on each poll and raises if a process of the
    site died. Fatal, with each late node's status and reasons, after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while True:
        check_alive()
        with contextlib.suppress(Retryable):
            rows = client.list_nodes(gateway)
        status = {str(r.get("name")): r for r in rows}
        late = [n for n in names if not node_ready(status.get(n, {}))]
        if not late:
            return rows
        if time.monotonic() > deadline:
            late = [f"{n}: {status.get(n, {}).get('status', 'unknown')}, "
                    f"limit {status.get(n, {}).get('limit', 0)} "
                    f"{status.get(n, {}).get('reasons') or ''}".strip() for n in late]
            raise Fatal(f"nodes not Online after {timeout:.0f} s: {'; '.join(late)}",
                        hint=f"see the logs in {log_dir}")
        time.sleep(0.2)
