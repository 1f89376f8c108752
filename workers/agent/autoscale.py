"""Per-node autoscaling of the concurrent-job limit, between a floor and a ceiling.

Off unless ``DMG_AUTOSCALE_MAX`` (``settings.autoscale_max``) is above 0; the
floor is ``DMG_AUTOSCALE_MIN`` (default 1). Every ``settings.autoscale_interval``
s the node's worker measures itself and applies :func:`decide` through its own
:class:`workers.agent.scaling.PoolScaler` (the same path as ``dmg scale``: a grow is at
once, a shrink never kills a running shard, the limit is persisted), and logs
the decision with its reason. The policy, after the reference text's advice:

- **lower** the limit by one when the machine is saturated: CPU at or above
  :data:`CPU_HIGH` % or memory at or above :data:`MEMORY_HIGH` % (more jobs
  would only slow every job; add nodes instead);
- **raise** it by one when CPU is below :data:`CPU_LOW` % and memory below
  :data:`MEMORY_LOW` %, every slot is busy, and work waits (shards queued on this
  node, or pending for the whole site);
- otherwise **hold**. A limit outside [floor, ceiling] (after a ``dmg scale``, or a
  restart with another setting) is brought back inside first.

Between the two thresholds nothing changes (hysteresis), and the CPU figure is
the average over the whole interval since the previous decision.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
from celery import bootsteps
from celery.worker import state as worker_state

import settings as dmg_settings
from dmg import registration as local_registration
from dmg.errors import BadInput, BrokerError, DmgError
from dmg.site.state import SiteState
from settings import Settings
from workers.agent import scaling
from workers.context import redis_client

log = logging.getLogger(__name__)

CPU_HIGH = 85.0
MEMORY_HIGH = 90.0
CPU_LOW = 60.0
MEMORY_LOW = 75.0

RAISE = "raise"
LOWER = "lower"
HOLD = "hold"


@dataclass(frozen=True)
class Metrics:
    """What a node knows about itself at a decision."""

    cpu_percent: float  # machine CPU use, average since the previous decision
    memory_percent: float  # machine memory in use
    limit: int  # the current concurrent-job limit
    running: int  # shards running on the node
    waiting: int  # shards queued on the node plus shards pending for the site


@dataclass(frozen=True)
class Decision:
    action: str  # raise | lower | hold
    limit: int  # the limit to apply (the current one when holding)
    reason: str


@dataclass(frozen=True)
class Bounds:
    floor: int
    ceiling: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Bounds | None:
        """The bounds, or None when autoscaling is off. BadInput for bounds that cannot hold."""
        if settings.autoscale_max <= 0:
            return None
        floor = max(settings.autoscale_min, 1)
        if floor > settings.autoscale_max:
            raise BadInput(f"DMG_AUTOSCALE_MIN={settings.autoscale_min} is above "
                           f"DMG_AUTOSCALE_MAX={settings.autoscale_max}",
                           hint="lower the floor, or set DMG_AUTOSCALE_MAX=0 to turn autoscaling off")
        if settings.autoscale_max > scaling.MAX_LIMIT:
            raise BadInput(f"DMG_AUTOSCALE_MAX={settings.autoscale_max} is above {scaling.MAX_LIMIT}",
                           hint=f"use at most {scaling.MAX_LIMIT}")
        if settings.autoscale_interval <= 0:
            raise BadInput(f"DMG_AUTOSCALE_INTERVAL={settings.autoscale_interval} must be positive",
                           hint="use a number of seconds such as 10")
        return cls(floor, settings.autoscale_max)


def decide(metrics: Metrics, bounds: Bounds) -> Decision:
    """The policy of the module docstring, for one set of measurements. Pure."""
    limit = metrics.limit
    if limit < bounds.floor:
        return Decision(RAISE, bounds.floor, f"limit {limit} is below the floor {bounds.floor}")
    if limit > bounds.ceiling:
        return Decision(LOWER, bounds.ceiling, f"limit {limit} is above the ceiling {bounds.ceiling}")
    cpu, memory = metrics.cpu_percent, metrics.memory_percent
    if cpu >= CPU_HIGH or memory >= MEMORY_HIGH:
        what = (f"CPU {cpu:.0f}% >= {CPU_HIGH:.0f}%" if cpu >= CPU_HIGH
                else f"memory {memory:.0f}% >= {MEMORY_HIGH:.0f}%")
        if limit > bounds.floor:
            return Decision(LOWER, limit - 1, f"{what}: the machine is saturated")
        return Decision(HOLD, limit, f"{what}, but the limit is at the floor {bounds.floor}: add nodes")
    if metrics.waiting > 0 and metrics.running >= limit:
        if cpu < CPU_LOW and memory < MEMORY_LOW:
            if limit < bounds.ceiling:
                return Decision(RAISE, limit + 1, f"{metrics.waiting} shards wait, all {limit} slots busy, "
                                                  f"CPU {cpu:.0f}% and memory {memory:.0f}% have room")
            return Decision(HOLD, limit, f"{metrics.waiting} shards wait, but the limit is at the ceiling "
                                         f"{bounds.ceiling}: add nodes")
        return Decision(HOLD, limit, f"{metrics.waiting} shards wait; CPU {cpu:.0f}% / memory {memory:.0f}% "
                                     "leave too little room to raise")
    if metrics.waiting > 0:
        return Decision(HOLD, limit, f"{limit - metrics.running} of {limit} slots are free")
    return Decision(HOLD, limit, "no work waits")


class Autoscaler:
    """Measures, decides and applies; one :meth:`tick` per interval.

    ``measure()`` returns the :class:`Metrics` now; ``apply(limit)`` sets the limit.
    A decision is logged when it changes the limit, or when the reason for holding
    differs from the last one logged.
    """

    def __init__(self, bounds: Bounds, *, node: str, measure: Callable[[], Metrics],
                 apply: Callable[[int], Any]) -> None:
        self.bounds = bounds
        self.node = node
        self.measure = measure
        self.apply = apply
        self._last_hold = ""

    def tick(self) -> Decision:
        metrics = self.measure()
        decision = decide(metrics, self.bounds)
        if decision.action == HOLD:
            if decision.reason != self._last_hold:
                log.info("autoscale hold node=%s limit=%d: %s", self.node, decision.limit, decision.reason)
                self._last_hold = decision.reason
            return decision
        self._last_hold = ""
        log.info("autoscale %s node=%s limit %d -> %d: %s", decision.action, self.node, metrics.limit,
                 decision.limit, decision.reason)
        self.apply(decision.limit)
        return decision


def site_waiting(state: SiteState, node: str) -> int:
    """Shards queued on ``node`` plus shards pending for the whole site (one round trip)."""
    pipe = state.redis.pipeline(transaction=False)
    pipe.scard(state.keys.queued(node))
    pipe.llen(state.keys.pending)
    queued, pending = pipe.execute()
    return int(queued) + int(pending)


class AutoscaleStep(bootsteps.StartStopStep):
    """Runs an :class:`Autoscaler` on the worker's timer when autoscaling is on."""

    requires = ("celery.worker.components:Timer", "celery.worker.components:Pool")

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.tref: Any = None
        self.settings: Settings = getattr(parent.app, "dmg_settings", None) or dmg_settings.load()
        self.autoscaler: Autoscaler | None = None
        self._state: SiteState | None = None

    def start(self, worker: Any) -> None:
        try:
            bounds = Bounds.from_settings(self.settings)
        except DmgError as exc:
            log.error("autoscaling off: %s (%s)", exc, exc.hint)
            return
        if bounds is None:
            return
        registration = local_registration.load(self.settings.data_dir, self.settings.node_name)
        self._state = SiteState(redis_client(self.settings, fail_fast=True, registration=registration),
                                 registration.gateway)
        psutil.cpu_percent(interval=None)  # starts the measurement window
        self.autoscaler = Autoscaler(bounds, node=registration.node, measure=lambda: self._measure(worker),
                                     apply=lambda limit: self._apply(worker, limit))
        log.info("autoscaling on node=%s floor=%d ceiling=%d every %.0f s", registration.node, bounds.floor,
                 bounds.ceiling, self.settings.autoscale_interval)
        self.tref = worker.timer.call_repeatedly(self.settings.autoscale_interval, self._tick, (),
                                                 priority=10)

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def _tick(self) -> None:
        if self.autoscaler is None:
            return
        try:
            self.autoscaler.tick()
        except (BrokerError, ValueError) as exc:  # try again at the next interval
            log.warning("autoscale decision skipped: %s", exc)
        except Exception:  # the pool is starting or stopping
            log.debug("autoscale decision skipped", exc_info=True)

    def _measure(self, worker: Any) -> Metrics:
        assert self._state is not None and self.autoscaler is not None
        consumer = worker.consumer
        scaler = scaling.SCALER
        limit = scaler.limit(consumer) if scaler is not None else int(consumer.pool.num_processes)
        return Metrics(cpu_percent=float(psutil.cpu_percent(interval=None)),
                       memory_percent=float(psutil.virtual_memory().percent), limit=limit,
                       running=len(worker_state.active_requests),
                       waiting=site_waiting(self._state, self.autoscaler.node))

    @staticmethod
    def _apply(worker: Any, limit: int) -> None:
        if scaling.SCALER is None:
            raise ValueError("this worker has no dmg pool scaler")
        scaling.SCALER.set_target(worker.consumer, limit)
