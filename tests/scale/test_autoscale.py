"""Per-node autoscaling: the policy on given measurements, the decision loop, a real node.

Given measurements of CPU, memory, the limit, running and waiting shards, the
policy raises the limit by one when the machine has room and work waits behind
busy slots, lowers it by one when CPU or memory is saturated, holds otherwise,
and never leaves [floor, ceiling]. A node started with a limit below the floor
raises it itself, through its pool scaler, and logs why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from dmg.embedded.site import EmbeddedSite
from dmg.errors import BadInput
from dmg.registration import node_dir
from dmg.site.state import SiteState
from settings import Settings
from tests.scale.support import need_redis, site_settings, wait_for
from workers.agent.autoscale import HOLD, LOWER, RAISE, Autoscaler, Bounds, Metrics, decide, site_waiting
from workers.agent.scaling import persisted_limit

BOUNDS = Bounds(floor=2, ceiling=8)


def metrics(*, cpu: float = 20, memory: float = 40, limit: int = 4, running: int = 4,
            waiting: int = 3) -> Metrics:
    return Metrics(cpu_percent=cpu, memory_percent=memory, limit=limit, running=running, waiting=waiting)


# -- the policy ------------------------------------------------------------------------
def test_idle_machine_busy_slots_and_waiting_work_raise_by_one() -> None:
    decision = decide(metrics(), BOUNDS)
    assert (decision.action, decision.limit) == (RAISE, 5)
    assert decision.reason == "3 shards wait, all 4 slots busy, CPU 20% and memory 40% have room"


def test_saturated_cpu_lowers_by_one() -> None:
    decision = decide(metrics(cpu=92), BOUNDS)
    assert (decision.action, decision.limit) == (LOWER, 3)
    assert decision.reason.startswith("CPU 92% >= 85%")


def test_saturated_memory_lowers_by_one_even_with_work_waiting() -> None:
    decision = decide(metrics(memory=95, waiting=50), BOUNDS)
    assert (decision.action, decision.limit) == (LOWER, 3)
    assert "memory 95% >= 90%" in decision.reason


def test_saturation_at_the_floor_holds_and_says_to_add_nodes() -> None:
    decision = decide(metrics(cpu=99, limit=2, running=2), BOUNDS)
    assert (decision.action, decision.limit) == (HOLD, 2)
    assert "add nodes" in decision.reason


def test_waiting_work_at_the_ceiling_holds_and_says_to_add_nodes() -> None:
    decision = decide(metrics(limit=8, running=8), BOUNDS)
    assert (decision.action, decision.limit) == (HOLD, 8) and "ceiling 8: add nodes" in decision.reason


@pytest.mark.parametrize(("cpu", "memory"), [(70, 40), (20, 80)])
def test_between_the_thresholds_nothing_changes(cpu: float, memory: float) -> None:
    decision = decide(metrics(cpu=cpu, memory=memory), BOUNDS)
    assert (decision.action, decision.limit) == (HOLD, 4) and "too little room" in decision.reason


def test_free_slots_or_no_work_hold() -> None:
    free = decide(metrics(running=2), BOUNDS)
    assert (free.action, free.limit, free.reason) == (HOLD, 4, "2 of 4 slots are free")
    idle = decide(metrics(waiting=0), BOUNDS)
    assert (idle.action, idle.limit, idle.reason) == (HOLD, 4, "no work waits")


def test_a_limit_outside_the_bounds_comes_back_inside_first() -> None:
    assert decide(metrics(limit=1, running=0, waiting=0, cpu=99), BOUNDS).limit == 2
    above = decide(metrics(limit=12, running=12, cpu=1), BOUNDS)
    assert (above.action, above.limit, above.reason) == (LOWER, 8, "limit 12 is above the ceiling 8")


def test_bounds_come_from_the_settings() -> None:
    assert Bounds.from_settings(Settings()) is None  # off by default
    assert Bounds.from_settings(Settings(autoscale_min=0, autoscale_max=6)) == Bounds(1, 6)
    with pytest.raises(BadInput, match="DMG_AUTOSCALE_MIN=7 is above DMG_AUTOSCALE_MAX=6"):
        Bounds.from_settings(Settings(autoscale_min=7, autoscale_max=6))
    with pytest.raises(BadInput, match="DMG_AUTOSCALE_INTERVAL"):
        Bounds.from_settings(Settings(autoscale_max=6, autoscale_interval=0))


# -- the decision loop -------------------------------------------------------------------
def test_a_tick_counts_the_site_backlog_applies_and_logs(redis_client: redis_lib.Redis,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    state = SiteState(redis_client, "gw")
    state.redis.sadd(state.keys.queued("n1"), "s1", "s2")
    state.redis.rpush(state.keys.pending, "s3")
    state.redis.sadd(state.keys.queued("other"), "s4")  # another node's queue: not ours
    limits = [4]
    applied: list[int] = []

    def apply(limit: int) -> None:
        applied.append(limit)
        limits.append(limit)

    scaler = Autoscaler(BOUNDS, node="n1", apply=apply,
                        measure=lambda: metrics(limit=limits[-1], running=limits[-1],
                                                waiting=site_waiting(state, "n1")))
    caplog.set_level(logging.INFO, logger="workers.agent.autoscale")

    first = scaler.tick()

    assert (first.action, applied) == (RAISE, [5])
    assert "autoscale raise node=n1 limit 4 -> 5: 3 shards wait" in caplog.text
    state.redis.delete(state.keys.queued("n1"), state.keys.pending)
    caplog.clear()
    assert scaler.tick().action == HOLD and scaler.tick().action == HOLD
    assert applied == [5]
    assert caplog.text.count("autoscale hold node=n1 limit=5: no work waits") == 1  # once per reason


# -- a real node -----------------------------------------------------------------------
@pytest.fixture
def site(tmp_path: Path) -> Iterator[EmbeddedSite]:
    need_redis()
    settings = site_settings(tmp_path / "data", autoscale_min=2, autoscale_max=3, autoscale_interval=0.5,
                             log_level="INFO")
    running = EmbeddedSite(settings, nodes=1, node_concurrency=1, flower=False, startup_timeout=60)
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.mark.integration
def test_a_node_below_its_floor_raises_its_own_limit(site: EmbeddedSite) -> None:
    client = redis_lib.Redis.from_url(site.broker_url())
    try:
        def load() -> dict[str, int]:
            raw = client.get(f"dmg:{site.gateway}:load:node1")
            return json.loads(raw) if raw else {}

        wait_for(lambda: load().get("limit") == 2 and len(load().get("pids", [])) == 2, timeout=30,
                 what="the node to grow its pool to the floor")
    finally:
        client.close()
    assert persisted_limit(node_dir(site.data_dir, "node1")) == 2
    log_text = (site.log_dir / "node1.log").read_text()
    assert "autoscale raise node=node1 limit 1 -> 2: limit 1 is below the floor 2" in log_text
