"""Changing a running node's concurrent-job limit without a restart.

The limit is the size of the worker's prefork pool. ``dmg scale`` sends the
remote-control command :func:`dmg_scale` to the node's worker; Flower's pool
buttons send Celery's own ``pool_grow`` / ``pool_shrink``. Either way the worker's
:class:`PoolScaler` (driven by the load bootstep every second) keeps the pool at
its target and records the limit:

- a grow takes effect at once (the new pool processes are forked right away);
- a shrink stops only idle pool processes: if shards run on every process, the
  limit drops at once for placement (the dispatcher places against the target)
  and the pool shrinks as shards finish. A running shard is never killed;
- a pool size changed by someone else (Flower, ``celery control pool_grow``)
  becomes the new target;
- the limit is written to ``<node dir>/limit`` and is used again when the node
  restarts (see :func:`persisted_limit`);
- the limit is what the worker's stats report as the pool's ``max-concurrency``
  (``celery inspect stats``, and so Flower's API and worker page).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery.worker.control import control_command

from workers.agent.limitfile import LIMIT_FILE, persist_limit, persisted_limit

log = logging.getLogger(__name__)

__all__ = ["LIMIT_FILE", "MAX_LIMIT", "PoolScaler", "persist_limit", "persisted_limit"]

MAX_LIMIT = 1024


class PoolScaler:
    """Keeps a prefork pool at a target size; see the module docstring.

    ``persist`` is called with every new limit. Not thread-safe: the worker calls
    it from its event loop only (timer and remote-control handlers).
    """

    def __init__(self, persist: Callable[[int], None] = lambda _limit: None) -> None:
        self.persist = persist
        self.target: int | None = None  # a limit asked for and not reached yet
        self.known: int | None = None  # the pool size last seen or set

    def limit(self, consumer: Any) -> int:
        """The limit placement should use: the target while one is pending."""
        return self.target if self.target is not None else int(consumer.pool.num_processes)

    def set_target(self, consumer: Any, limit: int) -> dict[str, Any]:
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"the concurrency limit must be between 1 and {MAX_LIMIT}, not {limit}")
        before = int(consumer.pool.num_processes)
        self.target = limit
        self.persist(limit)
        self.reconcile(consumer)
        size = int(consumer.pool.num_processes)
        log.info("concurrency limit set from %d to %d (pool now %d)", before, limit, size)
        return {"before": before, "limit": limit, "pool": size, "pending_shrink": max(size - limit, 0)}

    def reconcile(self, consumer: Any) -> None:
        """Move the pool toward the target; adopt a size changed by someone else."""
        pool = consumer.pool
        size = int(pool.num_processes)
        if self.target is None:
            if self.known is not None and size != self.known:
                log.info("pool resized outside dmg from %d to %d: new limit", self.known, size)
                self.persist(size)
                if size > self.known:
                    _start_processes(pool)
            self.known = size
            _report_limit(pool, size)
            return
        if size < self.target:
            pool.grow(self.target - size)
            _start_processes(pool)
            consumer._update_prefetch_count(self.target - size)
        elif size > self.target and _live_processes(pool) == size:
            # One shrink call per round, and only once the last one's processes are gone:
            # billiard would count a process that is still exiting as idle a second time.
            # Fewer idle processes than asked raises ValueError: the rest wait for their shards.
            with contextlib.suppress(ValueError):
                pool.shrink(size - self.target)
            shrunk = size - int(pool.num_processes)
            if shrunk:
                consumer._update_prefetch_count(-shrunk)
        self.known = int(pool.num_processes)
        if self.known == self.target:
            self.target = None
        _report_limit(pool, self.limit(consumer))


def _start_processes(pool: Any) -> None:
    """Fork the processes a grow added now: the prefork pool itself only does it on its
    next maintenance tick, up to 5 s later (Celery's autoscaler calls it the same way)."""
    maintain = getattr(pool, "maintain_pool", None)
    if maintain is not None:
        maintain()


def _report_limit(pool: Any, limit: int) -> None:
    """Make the worker's stats say ``limit``.

    Celery 5.7.0's prefork pool reports ``max-concurrency`` from ``pool.limit``, set
    once when the worker starts: ``pool_grow``/``pool_shrink`` change the processes,
    not it, so ``inspect stats`` and Flower kept showing the starting concurrency.
    ``limit`` is read only for those stats and when the pool is (re)started, where
    the live limit is the right size too.
    """
    if getattr(pool, "limit", None) != limit:
        pool.limit = limit


def _live_processes(pool: Any) -> int:
    info = pool.info
    processes = info.get("processes") if isinstance(info, dict) else None
    return len(processes) if isinstance(processes, list) else -1


#: The scaler of this worker process (set by the load bootstep when the worker starts).
SCALER: PoolScaler | None = None


@control_command(args=[("limit", int)], signature="<limit>")
def dmg_scale(state: Any, limit: int = 0, **_kwargs: Any) -> dict[str, Any]:
    """Remote control: set this node's concurrent-job limit (see the module docstring)."""
    if SCALER is None:
        return {"error": "this worker has no dmg pool scaler (not a dmg node?)"}
    if state.consumer.controller.autoscaler:
        return {"error": "the worker runs with --autoscale; restart it without to use dmg scale"}
    try:
        return {"ok": SCALER.set_target(state.consumer, int(limit))}
    except ValueError as exc:
        return {"error": str(exc)}


def install(node_dir: Path) -> PoolScaler:
    """Create this process's scaler, persisting limits under ``node_dir``."""
    global SCALER

    def _persist(limit: int) -> None:
        with contextlib.suppress(OSError):
            persist_limit(node_dir, limit)

    SCALER = PoolScaler(_persist)
    return SCALER
