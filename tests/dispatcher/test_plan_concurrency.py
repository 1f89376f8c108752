"""The claimer does not wait for one plan before the next: plans of claimed activity runs
are in flight together (against real Redis, an in-memory cloud, sources slow to list)."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from dispatcher.loop import DispatcherService, make_sender
from dmg.connectors import Connector, StoreSpec, connector_for
from dmg.site.state import SiteState
from settings import Settings
from tests.dispatcher.memcloud import MemoryCloud
from tests.dispatcher.test_loop import activity_run, beat
from tests.workers.support import wait_for

REPLY = 0.4  # seconds a source takes to list


class SlowListings:
    """A connector factory whose sources take :data:`REPLY` s to list; counts the listings
    in flight (a plan no longer waits on the cloud: the listing is its slow part)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most_in_flight = 0
        self._count = threading.Lock()

    def __call__(self, spec: StoreSpec) -> Connector:
        connector = connector_for(spec)
        real_list = connector.list

        def slow_list(path: str) -> Any:
            with self._count:
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                time.sleep(REPLY)  # a slow store, not a wait for a condition
                return list(real_list(path))
            finally:
                with self._count:
                    self.in_flight -= 1

        connector.list = slow_list  # type: ignore[method-assign]
        return connector


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, gateway="gw", lease_ttl=1.5, claim_wait=0.2, max_queued_per_node=0)


@pytest.fixture
def sender(settings: Settings) -> Iterator[Celery]:
    app = make_sender(settings)
    yield app
    app.close()


def test_claimed_activity_runs_are_planned_concurrently(tmp_path: Path, settings: Settings,
                                                        state: SiteState, sender: Celery) -> None:
    # Given 8 queued activity runs whose sources take 0.4 s to list
    beat(state, "a", 4)
    cloud = MemoryCloud()
    listings = SlowListings()
    for i in range(8):
        cloud.queue(activity_run(tmp_path, run_id=f"ar{i}", files=2))
    service = DispatcherService(settings, "a", state=state, cloud=cloud, sender=sender,
                                placement_interval=0.05, planners=4, connector_factory=listings)
    started = time.monotonic()
    service.start()
    try:
        # When the dispatcher plans them
        wait_for(lambda: len(cloud.plans) == 8, what="8 activity runs planned", timeout=30)
        took = time.monotonic() - started
        # Then several plans were in flight at once, each planned once, all shards queued
        assert listings.most_in_flight >= 2, listings.most_in_flight
        assert all(len(plans) == 1 for plans in cloud.plans.values())
        assert took < 8 * REPLY + 5, took  # one at a time would take 3.2 s of listings alone
        wait_for(lambda: len(cloud.placed()) + len(state.pending()) == 8, what="every shard queued")
    finally:
        service.stop()


def test_a_plan_is_dropped_when_the_lease_is_lost_before_it_starts(tmp_path: Path, settings: Settings,
                                                                   state: SiteState, sender: Celery) -> None:
    # Given one planner busy on a slow listing and more claimed runs waiting behind it
    beat(state, "a", 4)
    cloud = MemoryCloud()
    listings = SlowListings()
    for i in range(3):
        cloud.queue(activity_run(tmp_path, run_id=f"ar{i}", files=1))
    service = DispatcherService(settings, "a", state=state, cloud=cloud, sender=sender,
                                placement_interval=0.05, planners=1, connector_factory=listings)
    service.start()
    try:
        wait_for(lambda: listings.in_flight == 1, what="the first plan in flight")
        # When the lease is taken from it (another dispatcher with a newer epoch)
        state.redis.delete(state.keys.lease)
        # Then the plans not begun are dropped, not made under the old epoch
        wait_for(lambda: listings.in_flight == 0, what="the first listing done")
        time.sleep(REPLY * 2)  # the others would have been listed by now
        planned = [i for i in range(3) if state.redis.exists(state.keys.plan(f"ar{i}"))]
        assert len(planned) <= 2, planned
    finally:
        service.stop()


class ClaimLog(MemoryCloud):
    """Notes, as each claim begins, whether the runs claimed so far have their shards
    placed (``placed_then``), and when each claim began and answered."""

    def __init__(self, state: SiteState) -> None:
        super().__init__()
        self.state = state
        self.handed: list[str] = []  # activity runs claimed so far
        self.placed_then: list[bool] = []  # one per claim after the first that handed runs
        self.began: list[float] = []
        self.answered: list[float] = []

    def claim_activity_runs(self, *, epoch: int, wait: float, limit: int = 16,
                            again: Collection[str] | None = None) -> list[dict[str, Any]]:
        self.began.append(time.monotonic())
        if self.handed:
            shards = [self.state.shard(f"{run_id}-00000") for run_id in self.handed]
            self.placed_then.append(all(s is not None and bool(s.get("node")) for s in shards))
        claimed = super().claim_activity_runs(epoch=epoch, wait=wait, limit=limit, again=again)
        self.handed += [str(run["id"]) for run in claimed]
        self.answered.append(time.monotonic())
        return claimed


def test_on_an_idle_site_the_claimer_claims_again_once_its_run_is_placed(
        tmp_path: Path, settings: Settings, state: SiteState, sender: Celery) -> None:
    # Given an idle site: a node with free slots, nothing queued
    beat(state, "a", 4)
    cloud = ClaimLog(state)
    service = DispatcherService(settings, "a", state=state, cloud=cloud, sender=sender,
                                placement_interval=0.05, idle_follow=5.0)
    service.start()
    try:
        wait_for(lambda: cloud.began, what="the first long-poll")
        # When one activity run arrives
        cloud.queue(activity_run(tmp_path, run_id="ar1", files=1))
        wait_for(lambda: cloud.placed_then, what="the claim after the run's")
        # Then the claimer's next request waited for the run's shard to be placed (its
        # request would have competed with the planner and the placement for the process)
        assert cloud.placed_then[0], "claimed again before the idle run's shard was placed"
    finally:
        service.stop()


def test_a_slow_plan_on_an_idle_site_holds_the_next_claim_back_briefly(
        tmp_path: Path, settings: Settings, state: SiteState, sender: Celery) -> None:
    # Given an idle site whose source takes 0.4 s to list
    beat(state, "a", 4)
    cloud = ClaimLog(state)
    listings = SlowListings()
    service = DispatcherService(settings, "a", state=state, cloud=cloud, sender=sender,
                                placement_interval=0.05, connector_factory=listings, idle_follow=0.05)
    service.start()
    try:
        wait_for(lambda: cloud.began, what="the first long-poll")
        # When one activity run arrives and its plan is slow
        cloud.queue(activity_run(tmp_path, run_id="ar1", files=1))
        wait_for(lambda: cloud.placed_then, what="the claim after the run's")
        # Then the claimer claimed again while the plan was still listing (its wait is short),
        # and the run is placed all the same
        assert not cloud.placed_then[0], "the claimer waited for the whole slow plan"
        wait_for(lambda: cloud.placed(), what="the run's shard placed")
    finally:
        service.stop()
