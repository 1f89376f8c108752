"""A broker that lost the last epoch increments (a crash inside AOF's fsync window, a Sentinel
failover before replication) hands out an epoch the cloud has already seen. The dispatcher
gives the stale lease up and acquires again until its epoch is past the cloud's."""

from __future__ import annotations

from pathlib import Path

import redis as redis_lib
from celery import Celery

from dispatcher.loop import DispatcherService
from dmg.site.state import SiteState
from settings import Settings
from tests.dispatcher.memcloud import MemoryCloud
from tests.dispatcher.test_loop import activity_run, beat, services, settings, start
from tests.workers.support import wait_for

__all__ = ["services", "settings"]  # fixtures


def test_a_dispatcher_with_a_stale_epoch_takes_a_newer_one(
        tmp_path: Path, settings: Settings, state: SiteState, sender: Celery,
        services: list[DispatcherService], redis_client: redis_lib.Redis) -> None:
    cloud = MemoryCloud()
    cloud.max_epoch = 3  # epochs 1..3 were used before the broker forgot them
    beat(state, "a", 2)
    cloud.queue(activity_run(tmp_path, files=1))

    service = start(services, settings, "a", state, cloud, sender)

    wait_for(lambda: "ar1-00000" in cloud.placed(), timeout=20, what="claims with a fresh epoch")
    assert service.lease.epoch >= 3 and service.is_dispatcher()
    assert int(redis_client.get(state.keys.epoch) or 0) == service.lease.epoch
