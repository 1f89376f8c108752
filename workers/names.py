"""Names shared by the dispatcher and the workers: the task, its queues and ids.

Importing this module costs nothing (no Celery app is built), so the dispatcher
can send tasks by name without importing the worker code.
"""

from __future__ import annotations

#: The Celery task that copies one shard; args ``(shard_id: str, attempt: int)``, kwargs
#: ``{"epoch": int}`` (the placing dispatcher's lease epoch; optional).
COPY_SHARD = "dmg.copy_shard"

#: The Celery task that copies several small shards one after another in one pool process
#: (:mod:`dispatcher.packing`); args ``([[shard_id, attempt], ...],)``, kwargs ``{"epoch": int}``.
#: Only a node whose heartbeat says it takes it (:data:`PACKED_CAPABILITY`) is sent one.
COPY_SHARDS = "dmg.copy_shards"

#: The heartbeat field by which a node says it runs :data:`COPY_SHARDS`: the most shards it
#: takes in one message (absent or 0: it does not; a node of an earlier version).
PACKED_CAPABILITY = "carries"

#: The most shards one :data:`COPY_SHARDS` message carries (what this version's nodes say).
MAX_CARRIED = 8


def node_queue(node: str) -> str:
    """The queue only node ``node`` consumes."""
    return f"node.{node}"


def worker_hostname(node: str, gateway: str) -> str:
    """The Celery hostname of a node's worker: ``<node>@<gateway>``."""
    return f"{node}@{gateway}"


def copy_task_id(shard_id: str, attempt: int) -> str:
    """The Celery task id of one attempt of a shard (unique per attempt)."""
    return f"{shard_id}:{attempt}"


def packed_task_id(shards: list[tuple[str, int]]) -> str:
    """The Celery task id of a message carrying ``shards`` (unique: the first shard's attempt
    is, and the count tells it from that attempt's own task id)."""
    shard_id, attempt = shards[0]
    return f"{copy_task_id(shard_id, attempt)}+{len(shards)}"
