"""An in-memory cloud for the dispatcher's side of the API (claim, plan, fail, report)."""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any

from dmg.errors import DmgError, StaleAttempt


class MemoryCloud:
    """Hands out queued activity runs to the highest epoch seen and records the rest.

    ``fail_plans`` makes the next that many ``plan_shards`` calls raise that error.
    Claims and plans from an epoch older than the highest seen raise StaleAttempt,
    as the real cloud's fencing does. A claim with ``again`` hands out once more what the
    same epoch claimed and did not plan or fail, other than ``again`` (``agains`` records
    each ``again`` sent).
    """

    def __init__(self) -> None:
        self.queued: list[dict[str, Any]] = []
        self.plans: dict[str, list[list[dict[str, Any]]]] = {}
        self.failed: dict[str, str] = {}
        self.reports: list[tuple[str, dict[str, Any]]] = []
        self.claim_epochs: list[int] = []
        self.fail_plans: list[DmgError] = []
        self.cancelled: list[str] = []  # activity runs a user cancelled
        self.gone: list[tuple[list[str], int]] = []  # nodes the dispatcher reported gone, epoch
        self.max_epoch = 0
        self.unplanned: dict[int, dict[str, dict[str, Any]]] = {}  # epoch -> claimed, not planned
        self.agains: list[list[str]] = []
        self._cond = threading.Condition()

    def queue(self, activity_run: dict[str, Any]) -> None:
        with self._cond:
            self.queued.append(activity_run)
            self._cond.notify_all()

    def _fence(self, epoch: int) -> None:
        if epoch < self.max_epoch:
            raise StaleAttempt(f"epoch {epoch} is older than {self.max_epoch}")
        self.max_epoch = epoch

    def claim_activity_runs(self, *, epoch: int, wait: float, limit: int = 16,
                            again: Collection[str] | None = None) -> list[dict[str, Any]]:
        with self._cond:
            self._fence(epoch)
            self.claim_epochs.append(epoch)
            unplanned = self.unplanned.setdefault(epoch, {})
            if again is not None:
                self.agains.append(sorted(again))
                resent = [dict(run, again=True) for run_id, run in unplanned.items()
                          if run_id not in again][:limit]
                if resent:
                    return resent
            self._cond.wait_for(lambda: bool(self.queued), timeout=wait)
            claimed, self.queued = self.queued[:limit], self.queued[limit:]
            unplanned.update((run["id"], run) for run in claimed)
            return claimed

    def _settled(self, activity_run_id: str) -> None:
        for unplanned in self.unplanned.values():
            unplanned.pop(activity_run_id, None)

    def plan_shards(self, activity_run_id: str, *, epoch: int, shards: list[dict[str, Any]]) -> None:
        with self._cond:
            self._fence(epoch)
            if self.fail_plans:
                raise self.fail_plans.pop(0)
            self.plans.setdefault(activity_run_id, []).append(list(shards))
            self._settled(activity_run_id)

    def fail_activity_run(self, activity_run_id: str, *, epoch: int, error: str) -> None:
        with self._cond:
            self._fence(epoch)
            self.failed[activity_run_id] = error
            self._settled(activity_run_id)

    def cancelled_activity_runs(self) -> list[str]:
        with self._cond:
            return list(self.cancelled)

    def report_nodes_gone(self, nodes: list[str], *, epoch: int) -> None:
        with self._cond:
            self.gone.append((list(nodes), epoch))

    def report_shard(self, shard_id: str, report: dict[str, Any]) -> None:
        with self._cond:
            self.reports.append((shard_id, dict(report)))

    def placed(self) -> dict[str, tuple[str, int, str]]:
        with self._cond:
            return {s: (r["node"], r["attempt"], r["wait_reason"]) for s, r in self.reports
                    if r["status"] == "placed"}
