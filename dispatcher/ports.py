"""What the dispatcher needs from the outside, as protocols.

:class:`dmg.cloud.client.CloudClient` is a :class:`DispatchCloud`; a Celery app is
a :class:`TaskSender`. Tests pass in-memory implementations of their own.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol


class DispatchCloud(Protocol):
    def claim_activity_runs(self, *, epoch: int, wait: float, limit: int = 16,
                            again: Collection[str] | None = None) -> list[dict[str, Any]]: ...

    def plan_shards(self, activity_run_id: str, *, epoch: int, shards: list[dict[str, Any]]) -> None: ...

    def fail_activity_run(self, activity_run_id: str, *, epoch: int, error: str) -> None: ...

    def report_shard(self, shard_id: str, report: dict[str, Any]) -> None: ...

    def cancelled_activity_runs(self) -> list[str]: ...

    def report_nodes_gone(self, nodes: list[str], *, epoch: int) -> None: ...


class TaskSender(Protocol):
    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any: ...
