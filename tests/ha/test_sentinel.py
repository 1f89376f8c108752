"""Redis Sentinel: a primary, a replica and three sentinels; the primary is SIGKILLed.

- dmg's own clients (:func:`dmg.site.connection.redis_client`) follow the failover: a
  riding client's command issued while the group has no primary completes on the
  promoted replica; a fail-fast client raises meanwhile and works after.
- A whole site on ``sentinel://`` URLs (Celery broker and results, site state, the
  dispatcher lease) carries on: a throttled run completes with every file
  byte-identical (work in flight may be redone by new attempts; the sink holds each
  file once).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import pytest

from dmg.cli.demo import KIB
from dmg.embedded.faults import SiteUnderTest
from dmg.errors import BrokerError, BrokerUnreachable, Conflict
from dmg.site.connection import redis_client
from settings import Settings
from tests.ha.sitekit import (
    all_nodes,
    assert_copied_exactly,
    figure,
    ha_settings,
    online,
    running_site,
    shard_statuses,
    throttled_copy,
    wait_for,
)
from tests.servers.sentinel import SentinelGroup, sentinel_group

pytestmark = pytest.mark.integration
__all__ = ["sentinel_group"]  # the fixture
T = TypeVar("T")


def quietly(call: Callable[..., T], *args: object) -> T | None:
    """``call(*args)``, or None while the broker is unreachable."""
    try:
        return call(*args)
    except BrokerError:
        return None


def test_the_client_factory_follows_a_failover(sentinel_group: SentinelGroup) -> None:
    settings = Settings(redis_url=sentinel_group.url(db=2), redis_master_name=sentinel_group.master_name)
    riding = redis_client(settings, timeout=1, retry_for=60)
    failing = redis_client(settings, timeout=1)
    try:
        riding.set("k", "v")
        assert riding.execute_command("WAIT", 1, 5000) == 1  # the replica has it
        assert failing.connection_pool.get_master_address()[1] == sentinel_group.primary.port

        sentinel_group.kill_primary()
        with pytest.raises(BrokerUnreachable):
            failing.get("k")
        answers: list[object] = []
        asking = threading.Thread(target=lambda: answers.append(riding.get("k")), daemon=True)
        asking.start()
        sentinel_group.wait_failover()
        asking.join(60)

        assert answers == [b"v"]
        back = wait_for(lambda: quietly(failing.get, "k"), timeout=30, what="the fail-fast client back")
        assert back == b"v"
        assert failing.connection_pool.get_master_address()[1] == sentinel_group.replica.port
        assert riding.connection_pool.connection_kwargs["db"] == 2
    finally:
        riding.close()
        failing.close()


def test_a_client_asked_to_keep_its_connection_stays_pooled_on_sentinel(
        sentinel_group: SentinelGroup) -> None:
    """Given a Sentinel URL, when a client is asked to keep its connection (a pool process's),
    then it stays a pooled client (each connection asks the sentinels where the primary is):
    a kept connection did not follow a failover."""
    settings = Settings(redis_url=sentinel_group.url(db=2), redis_master_name=sentinel_group.master_name)
    client = redis_client(settings, timeout=1, retry_for=60, keep_connection=True)
    try:
        assert client.ping() and client.connection is None
    finally:
        client.close()


_PLACED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO dispatcher\.placement: shard placed ")


def placements(site: SiteUnderTest) -> list[float]:
    """POSIX times of every "shard placed" line in the nodes' logs."""
    times = []
    for name in site.node_names:
        for line in (site.log_dir / f"{name}.log").read_text(errors="replace").splitlines():
            found = _PLACED.match(line)
            if found:
                times.append(datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return sorted(times)


def test_a_site_on_sentinel_carries_on_when_the_primary_is_killed(sentinel_group: SentinelGroup,
                                                                    tmp_path: Path) -> None:
    settings = ha_settings(tmp_path / "site", redis_url=sentinel_group.url(),
                           redis_master_name=sentinel_group.master_name)
    site = SiteUnderTest(settings, nodes=2, node_concurrency=2, flower=False, startup_timeout=60,
                         external_broker=True)
    with running_site(site), site.client() as client:
        copy = throttled_copy(client, site, tmp_path, files=40, bandwidth=64 * KIB)
        run_id = client.run_pipeline(copy.pipeline)["id"]
        wait_for(lambda: "running" in shard_statuses(client, run_id), timeout=30, what="a shard running")
        assert "planned" in shard_statuses(client, run_id)  # some shards still to place

        killed = time.time()
        sentinel_group.kill_primary()
        sentinel_group.wait_failover()
        promoted = time.time()
        figure(site, "sentinel_kill_to_promotion_s", promoted - killed)

        wait_for(lambda: client.run(run_id)["status"] in ("Succeeded", "Failed"), timeout=120,
                 what="the run to end")
        assert_copied_exactly(client, run_id, copy)
        wait_for(lambda: all_nodes(client, site, online), timeout=30, what="every node Online")
        after = [t for t in placements(site) if t > killed]
        assert after, "no shard was placed after the failover"
        figure(site, "sentinel_kill_to_next_placement_s", after[0] - killed)
        figure(site, "sentinel_promotion_to_next_placement_s", after[0] - promoted)


def test_a_site_never_starts_a_redis_of_its_own_for_a_sentinel_url(tmp_path: Path) -> None:
    sentinel = SiteUnderTest(Settings(data_dir=tmp_path, redis_url="sentinel://127.0.0.1:1;sentinel://h:2/0"))
    plain = SiteUnderTest(Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0"))
    assert sentinel.external_broker and not plain.external_broker
    with pytest.raises(Conflict, match="external broker"):
        sentinel.stop_redis()
