"""Which node processes hold a connection to the broker (dmg.site.presence), on a real Redis.

Given processes that name their connections as a node's do, when one is SIGKILLed its
node is gone after two looks a second apart (not at the first look, not while it is
connected), and when Redis restarts nobody is judged until the grace period passes;
a process that reconnects is never judged gone. Celery's broker and result
connections carry the name given to ``celery_config``. A gone node's heartbeat is
expired (once), so the dispatcher moves its shards at once.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from dmg.embedded.redis import EmbeddedRedis
from dmg.procs import free_port
from dmg.site.connection import redis_client
from dmg.site.presence import PresenceWatch, client_name, connected_nodes
from dmg.site.state import SiteState
from settings import Settings
from settings.celery import celery_config
from tests.ha.sitekit import require_redis, wait_for
from tests.waiting import holds_for

# A node process: names its connection, then pings every PERIOD s (0: never again).
CHILD = """
import sys, time, redis
client = redis.Redis.from_url(sys.argv[1], client_name=sys.argv[2], socket_timeout=1)
client.ping()
print("up", flush=True)
period = float(sys.argv[3])
while True:
    time.sleep(period or 3600)
    try:
        client.ping()
    except redis.RedisError:
        pass
"""


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test alone (it is restarted)."""
    require_redis()
    server = EmbeddedRedis(tmp_path / "redis", free_port()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def spawn() -> Iterator[object]:
    children: list[subprocess.Popen[str]] = []

    def start(url: str, name: str, period: float = 0.0) -> subprocess.Popen[str]:
        child = subprocess.Popen([sys.executable, "-c", CHILD, url, name, str(period)],
                                 stdout=subprocess.PIPE, text=True)
        children.append(child)
        assert child.stdout is not None and child.stdout.readline().strip() == "up"
        return child

    yield start
    for child in children:
        child.kill()
        child.wait()


def test_named_connections_are_seen_per_gateway(redis_url: str, spawn: object) -> None:
    spawn(redis_url, client_name("site", "node1"))  # type: ignore[operator]
    spawn(redis_url, client_name("other", "node2"))  # type: ignore[operator]
    named = redis_client(Settings(redis_url=redis_url), timeout=2, client_name=client_name("site", "node3"))
    named.ping()
    with redis_lib.Redis.from_url(redis_url) as probe:
        assert connected_nodes(probe, "site") == {"node1", "node3"}
        assert connected_nodes(probe, "other") == {"node2"}
    named.close()


def test_celery_connections_carry_the_node_s_name(redis_url: str) -> None:
    from celery import Celery

    app = Celery("presence-test", set_as_current=False)
    app.conf.update(celery_config(Settings(redis_url=redis_url, gateway="site"),
                                  client_name=client_name("site", "node7")))
    try:
        with app.connection_for_write() as conn:
            conn.default_channel.client.ping()
            with redis_lib.Redis.from_url(redis_url) as probe:
                assert "node7" in connected_nodes(probe, "site")
    finally:
        app.close()


def test_a_killed_process_is_gone_after_two_looks(redis_url: str, spawn: object) -> None:
    victim = spawn(redis_url, client_name("site", "node1"))  # type: ignore[operator]
    spawn(redis_url, client_name("site", "node2"), 0.2)  # type: ignore[operator]
    watch = PresenceWatch("site", grace=0.0, confirm=1.0)
    with redis_lib.Redis.from_url(redis_url) as probe:
        assert watch.look(probe) == set()

        killed = time.monotonic()
        victim.kill()
        victim.wait()
        wait_for(lambda: "node1" not in connected_nodes(probe, "site"), timeout=5,
                 what="the killed process's connection closed")
        assert watch.look(probe) == set()  # absent once: maybe reconnecting
        gone = wait_for(lambda: watch.look(probe), timeout=5, what="node1 gone", interval=0.1)
        took = time.monotonic() - killed

    assert gone == {"node1"}
    assert 1.0 <= took < 3.0, took
    print(f"FIGURE presence_kill_to_gone_s {took:.2f}")


def test_a_redis_restart_judges_nobody_until_the_grace_passes(own_redis: EmbeddedRedis,
                                                             spawn: object) -> None:
    url = own_redis.url
    spawn(url, client_name("site", "quiet"))  # type: ignore[operator]  # never reconnects
    spawn(url, client_name("site", "busy"), 0.2)  # type: ignore[operator]  # reconnects at once
    watch = PresenceWatch("site", grace=3.0, confirm=0.5)
    probe = redis_lib.Redis.from_url(url)
    try:
        wait_for(lambda: watch.look(probe) == set() and len(connected_nodes(probe, "site")) == 2
                 and time.monotonic() - watch._server_since >= watch.grace, timeout=10,
                 what="both connected, the fresh server's grace passed")
        run_id = watch.run_id

        own_redis.restart()
        restarted = time.monotonic()

        def nobody_gone() -> None:
            assert watch.look(probe) == set()

        holds_for(nobody_gone, seconds=2.5)  # inside the grace: nobody is gone
        assert watch.run_id != run_id
        assert connected_nodes(probe, "site") == {"busy"}  # quiet lost its connection

        gone = wait_for(lambda: watch.look(probe), timeout=5, what="quiet gone after the grace")
        assert gone == {"quiet"}
        assert time.monotonic() - restarted >= 2.5
    finally:
        probe.close()


def test_a_gone_node_s_heartbeat_is_expired_and_its_shards_move(state: SiteState) -> None:
    from dispatcher.recovery import requeue_offline, retire_gone

    for node in ("node1", "node2"):
        state.publish_heartbeat(node, {"node": node}, ttl=10)
    state.save_shard("shard-1", {"id": "shard-1"})
    attempt = state.new_attempt("shard-1", "node1")
    assert attempt == 1 and state.queued("node1") == {"shard-1"}

    assert retire_gone(state, {"node1", "ghost"}) == ["node1"]  # ghost: no heartbeat to expire
    assert set(state.heartbeats()) == {"node2"}
    assert retire_gone(state, {"node1"}) == []  # already offline
    assert requeue_offline(state) == ["shard-1"]
    assert state.pending() == ["shard-1"] and state.queued("node1") == set()
