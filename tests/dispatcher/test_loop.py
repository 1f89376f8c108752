"""DispatcherService end to end on real Redis with an in-memory cloud and a real Celery sender."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from celery import Celery

from dispatcher.loop import DispatcherService, make_sender
from dispatcher.recovery import requeue_offline_queued
from dmg.connectors import Connector, StoreSpec, connector_for
from dmg.errors import Retryable
from dmg.site.attempts import STALE, start_run
from dmg.site.state import SiteState
from settings import Settings
from settings.celery import broker_key_prefix
from tests.dispatcher.memcloud import MemoryCloud
from tests.workers.support import file_store, wait_for, write_files


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, gateway="gw", lease_ttl=1.5, claim_wait=0.2, shard_max_files=1,
                    max_queued_per_node=0)


@pytest.fixture
def sender(settings: Settings) -> Iterator[Celery]:
    app = make_sender(settings)
    yield app
    app.close()


@pytest.fixture
def services() -> Iterator[list[DispatcherService]]:
    started: list[DispatcherService] = []
    yield started
    for service in started:
        service.stop()


def start(services: list[DispatcherService], settings: Settings, node: str, state: SiteState,
          cloud: MemoryCloud, sender: Celery, **options: Any) -> DispatcherService:
    service = DispatcherService(settings, node, state=state, cloud=cloud, sender=sender,
                                placement_interval=0.05, **options)
    services.append(service)
    service.start()
    return service


def activity_run(tmp_path: Path, run_id: str = "ar1", files: int = 3) -> dict[str, Any]:
    write_files(tmp_path / "src" / run_id, {f"f{i}": 100 + i for i in range(files)})
    return {"id": run_id, "run_id": "r1", "name": "copy",
            "source": {"store": file_store("src", tmp_path / "src").to_json(), "path": run_id},
            "sink": {"store": file_store("dst", tmp_path / "dst").to_json(), "path": "out"}, "options": {}}


def beat(state: SiteState, node: str, limit: int, ttl: float = 60) -> None:
    state.publish_heartbeat(node, {"node": node, "limit": limit}, ttl=ttl)


def test_the_dispatcher_claims_plans_and_places_by_free_slots(
        tmp_path: Path, settings: Settings, state: SiteState, sender: Celery,
        services: list[DispatcherService], redis_client: redis_lib.Redis) -> None:
    beat(state, "a", 2)
    cloud = MemoryCloud()
    cloud.queue(activity_run(tmp_path))

    service = start(services, settings, "a", state, cloud, sender)

    wait_for(lambda: len(cloud.placed()) == 2, what="two shards placed")
    assert service.is_dispatcher() and service.role() == "dispatcher"
    assert [s["id"] for s in cloud.plans["ar1"][0]] == ["ar1-00000", "ar1-00001", "ar1-00002"]
    assert cloud.placed() == {"ar1-00000": ("a", 1, ""), "ar1-00001": ("a", 1, "")}
    # node a is full: the third waits (a placement is reported before its entry leaves pending)
    wait_for(lambda: state.pending() == ["ar1-00002"], what="the third shard left pending")
    assert redis_client.llen(broker_key_prefix("gw") + "node.a") == 2
    assert set(cloud.claim_epochs) == {service.lease.epoch}


def test_one_of_two_candidates_dispatches_and_the_other_takes_over_when_it_stops(
        settings: Settings, state: SiteState, sender: Celery, services: list[DispatcherService]) -> None:
    cloud = MemoryCloud()
    a = start(services, settings, "a", state, cloud, sender)
    b = start(services, settings, "b", state, cloud, sender)

    leader = wait_for(lambda: next((s for s in (a, b) if s.is_dispatcher()), None), what="a dispatcher")
    other = b if leader is a else a
    assert other.is_dispatcher() is False and other.role() == "worker"
    first_epoch = leader.lease.epoch

    leader.stop()

    wait_for(other.is_dispatcher, timeout=10, what="the other candidate to take over")
    assert other.lease.epoch > first_epoch
    wait_for(lambda: other.lease.epoch in cloud.claim_epochs, what="claims with the new epoch")


def test_a_dispatcher_whose_lease_is_taken_steps_down_and_competes_again(
        tmp_path: Path, settings: Settings, state: SiteState, sender: Celery,
        services: list[DispatcherService], redis_client: redis_lib.Redis) -> None:
    cloud = MemoryCloud()
    service = start(services, settings, "a", state, cloud, sender)
    wait_for(service.is_dispatcher, what="the dispatcher")
    epoch = service.lease.epoch

    redis_client.set(state.keys.lease, "intruder:token", px=1000)  # someone else holds it now

    wait_for(lambda: not service.is_dispatcher(), timeout=10, what="the dispatcher to step down")
    wait_for(service.is_dispatcher, timeout=10, what="the lease to be won again after it expired")
    assert service.lease.epoch > epoch
    beat(state, "a", 1)
    cloud.queue(activity_run(tmp_path, files=1))
    wait_for(lambda: "ar1-00000" in cloud.placed(), what="placement to resume")


def test_planning_deferred_by_a_cloud_outage_happens_later(
        tmp_path: Path, settings: Settings, state: SiteState, sender: Celery,
        services: list[DispatcherService]) -> None:
    beat(state, "a", 4)
    cloud = MemoryCloud()
    cloud.fail_plans.append(Retryable("cannot reach the cloud"))
    cloud.queue(activity_run(tmp_path, files=2))

    start(services, settings, "a", state, cloud, sender)

    wait_for(lambda: len(cloud.placed()) == 2, what="the deferred plan to be placed")
    assert len(cloud.plans["ar1"]) == 1


def test_a_source_that_cannot_be_listed_fails_the_activity_run(
        tmp_path: Path, settings: Settings, state: SiteState, sender: Celery,
        services: list[DispatcherService]) -> None:
    cloud = MemoryCloud()
    run = activity_run(tmp_path)
    run["source"]["path"] = "missing"
    cloud.queue(run)

    start(services, settings, "a", state, cloud, sender)

    error = wait_for(lambda: cloud.failed.get("ar1"), what="the activity run to fail")
    assert "missing does not exist in store 'src'" in error


def test_queued_shards_of_an_offline_node_go_back_to_pending_and_are_fenced(state: SiteState) -> None:
    beat(state, "a", 2)
    beat(state, "b", 2, ttl=0.05)
    state.save_shard("ar1-00000", {"shard_id": "ar1-00000"})
    state.save_shard("ar1-00001", {"shard_id": "ar1-00001"})
    old = state.new_attempt("ar1-00000", "b")
    state.new_attempt("ar1-00001", "a")
    wait_for(lambda: "b" not in state.heartbeats(), what="b's heartbeat to expire")

    moved = requeue_offline_queued(state)

    assert moved == ["ar1-00000"]
    assert state.pending() == ["ar1-00000"]
    assert state.queued("b") == set() and state.queued("a") == {"ar1-00001"}
    assert not state.is_current("ar1-00000", old)  # the message in b's queue can no longer run
    assert start_run(state, "ar1-00000", old, "b", runner="w", alive=lambda _t: False)[0] == STALE
    assert requeue_offline_queued(state) == []  # idempotent


def test_a_run_that_cannot_be_planned_fails_alone_and_the_batch_goes_on(
        tmp_path: Path, settings: Settings, state: SiteState, sender: Celery,
        services: list[DispatcherService]) -> None:
    """Given a claim batch of three where planning the middle one raises something no
    connector should (a bug, a hostile definition), that one is failed with its reason
    and the other two are planned; the claimer keeps claiming afterwards."""
    beat(state, "a", 8)
    cloud = MemoryCloud()
    poison = activity_run(tmp_path, "ar2")
    poison["source"]["store"]["options"] = {"explode": True}
    for run in (activity_run(tmp_path, "ar1"), poison, activity_run(tmp_path, "ar3")):
        cloud.queue(run)

    def connectors(spec: StoreSpec) -> Connector:
        if spec.options.get("explode"):
            raise RecursionError("maximum recursion depth exceeded")
        return connector_for(spec)

    service = DispatcherService(settings, "a", state=state, cloud=cloud, sender=sender,
                                connector_factory=connectors, placement_interval=0.05)
    services.append(service)
    service.start()

    wait_for(lambda: {"ar1", "ar3"} <= set(cloud.plans) and "ar2" in cloud.failed, what="the batch handled")
    assert "ar2" not in cloud.plans
    assert cloud.failed["ar2"] == ("cannot plan activity 'copy': unexpected RecursionError: "
                                   "maximum recursion depth exceeded")
    cloud.queue(activity_run(tmp_path, "ar4"))
    wait_for(lambda: "ar4" in cloud.plans, what="a later claim planned")


def test_a_removed_node_gives_the_lease_up_and_another_takes_it(
        settings: Settings, state: SiteState, sender: Celery, services: list[DispatcherService]) -> None:
    cloud = MemoryCloud()
    a = start(services, settings, "a", state, cloud, sender)
    wait_for(a.is_dispatcher, what="a dispatching")
    assert a.lease_epoch() == a.lease.epoch > 0
    b = start(services, settings, "b", state, cloud, sender)

    state.set_drain("a", "removed")

    wait_for(b.is_dispatcher, timeout=10, what="b dispatching once a is removed")
    assert not a.is_dispatcher() and a.lease_epoch() == 0
    assert b.is_dispatcher()
