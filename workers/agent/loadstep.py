"""A worker bootstep that publishes the worker's live load every second.

``SiteState.publish_worker_load(node, running, limit, pids, ttl)`` where
``running`` is the number of tasks the pool is executing and ``limit`` is the
pool's size, or the target a ``dmg scale`` is shrinking it to (DESIGN.md trap:
after ``pool_grow``, ``max-concurrency`` stays stale; the pool's own count does
not). Each tick also lets :class:`workers.agent.scaling.PoolScaler` move the pool
toward its target. The key expires
after :data:`LOAD_TTL` s, so a hung or dead worker disappears from it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from celery.worker import state as worker_state

import settings as dmg_settings
from dmg import registration as local_registration
from dmg.errors import BrokerError, DmgError
from dmg.site.state import SiteState
from workers.agent import scaling
from workers.context import redis_client

log = logging.getLogger(__name__)

#: Seconds between publications, and how long one stays valid.
LOAD_INTERVAL = 1.0
LOAD_TTL = 5.0


def pool_pids(worker: Any) -> list[int]:
    """The pids of the pool's live processes (prefork); ``[]`` for other pools."""
    try:
        info = worker.pool.info
    except Exception:  # a pool that is starting or stopping has no info yet
        return []
    processes = info.get("processes") if isinstance(info, dict) else None
    if isinstance(processes, list):
        return [int(p) for p in processes if p]
    return []


class WorkerLoadStep(bootsteps.StartStopStep):
    """Publishes ``{running, limit, pids}`` to the site state on the worker's timer."""

    requires = ("celery.worker.components:Timer", "celery.worker.components:Pool")

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.tref: Any = None
        self._failing = False
        self.settings: dmg_settings.Settings = (getattr(parent.app, "dmg_settings", None)
                                                or dmg_settings.load())
        self._state: SiteState | None = None
        self._node = ""
        self.scaler: scaling.PoolScaler | None = None

    def start(self, worker: Any) -> None:
        self.scaler = scaling.install(
            local_registration.node_dir(self.settings.data_dir, self.settings.node_name))
        self.publish(worker)
        self.tref = worker.timer.call_repeatedly(LOAD_INTERVAL, self.publish, (worker,), priority=10)

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def publish(self, worker: Any) -> None:
        pids = pool_pids(worker)
        limit = len(pids)
        consumer = getattr(worker, "consumer", None)
        if self.scaler is not None and consumer is not None and getattr(consumer, "qos", None) is not None:
            try:
                self.scaler.reconcile(consumer)
                limit = self.scaler.limit(consumer)
            except Exception:  # the pool is starting or stopping: try again next second
                log.debug("pool not ready to scale", exc_info=True)
        try:
            if self._state is None:
                registration = local_registration.load(self.settings.data_dir, self.settings.node_name)
                self._node = registration.node
                client = redis_client(self.settings, fail_fast=True, registration=registration)
                self._state = SiteState(client, registration.gateway)
            self._state.publish_worker_load(
                self._node, running=len(worker_state.active_requests), limit=limit,
                pids=pids, ttl=LOAD_TTL)
        except (BrokerError, DmgError, OSError) as exc:
            if not self._failing:
                log.warning("cannot publish the worker load: %s", exc)
            self._failing = True
            return
        if self._failing:
            log.info("worker load published again")
        self._failing = False
