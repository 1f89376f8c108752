"""A broker restart can take a queued shard's message with it; the dispatcher sends it again.

A node's worker that has taken a message when its broker connection breaks drops it (Celery
clears what it reserved), and kombu cannot hand it back to a broker that is down: it waits
in the unacked set for the visibility timeout (12 h). The node lives on, so no recovery for
dead nodes moves the shard. Given a real dispatcher on a Redis of the test's own, a shard
queued on a live node, and its message gone, when Redis restarts, then once the broker has
been back ``offline_after`` s the shard has a new attempt on the same node and its message
is in the node's queue; the old attempt can no longer start.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from dispatcher.loop import DispatcherService, make_sender
from dmg.embedded.redis import EmbeddedRedis
from dmg.site.boundary import SiteRedis
from dmg.site.state import SiteState
from settings import Settings
from settings.celery import broker_key_prefix
from tests.dispatcher.memcloud import MemoryCloud
from tests.dispatcher.test_loop import activity_run, beat
from tests.ha.test_recovery import messages
from tests.workers.support import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def client(broker: EmbeddedRedis) -> Iterator[redis_lib.Redis]:
    redis = SiteRedis.from_url(broker.client_url())
    yield redis
    redis.close()


def test_a_queued_shard_whose_message_was_lost_is_reissued_after_a_broker_restart(
        tmp_path: Path, broker: EmbeddedRedis, client: redis_lib.Redis) -> None:
    settings = Settings(redis_url=broker.client_url(), gateway="gw", lease_ttl=1.5, claim_wait=0.2,
                        shard_max_files=1, max_queued_per_node=0, offline_after=1.0)
    state = SiteState(client, "gw")
    beat(state, "a", 1, ttl=600)  # node a lives through the restart (its key is in the AOF)
    cloud = MemoryCloud()
    cloud.queue(activity_run(tmp_path, files=1))
    sender = make_sender(settings)
    service = DispatcherService(settings, "a", state=state, cloud=cloud, sender=sender,
                                placement_interval=0.05)
    try:
        service.start()
        wait_for(lambda: "ar1-00000" in state.queued("a"), what="the shard queued on a")
        attempt = int(state.shard("ar1-00000")["attempt"])
        assert [args[:2] for args, _ in messages(client, "a")] == [["ar1-00000", attempt]]
        # a's worker takes the message and loses it with the broker connection
        client.delete(broker_key_prefix("gw") + "node.a")

        broker.restart()

        wait_for(lambda: [args[:2] for args, _ in messages(client, "a")] == [["ar1-00000", attempt + 1]],
                 timeout=15,
                 what="the shard's message sent again under a new attempt")
        shard = state.shard("ar1-00000")
        assert shard["node"] == "a" and shard["state"] == "queued"
        assert not state.is_current("ar1-00000", attempt)  # the lost message, if it comes back, is stale
        assert state.is_current("ar1-00000", attempt + 1)
    finally:
        service.stop()
        sender.close()
