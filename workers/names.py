"""Names shared by the dispatcher and the workers: the task, its queues and ids.

Importing this module costs nothing (no Celery app is built), so the dispatcher
can send tasks by name without importing the worker code.
"""

from __future__ import annotations

#: The Celery task that copies one shard; args ``(shard_id: str, attempt: int)``, kwargs
#: ``{"epoch": int}`` (the placing dispatcher's lease epoch; optional).
COPY_SHARD = "dmg.copy_shard"


def node_queue(node: str) -> str:
    """The queue only node ``node`` consumes."""
    return f"node.{node}"


def worker_hostname(node: str, gateway: str) -> str:
    """The Celery hostname of a node's worker: ``<node>@<gateway>``."""
    return f"{node}@{gateway}"


def copy_task_id(shard_id: str, attempt: int) -> str:
    """The Celery task id of one attempt of a shard (unique per attempt)."""
    return f"{shard_id}:{attempt}"
