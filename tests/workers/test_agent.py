"""The node agent's heartbeat: real psutil values, real Redis, a real HTTP cloud."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from dmg.cloud.client import CloudClient
from dmg.procs import free_port
from dmg.registration import NodeRegistration
from dmg.site.state import SiteState
from dmg.version import __version__
from settings import Settings
from tests.workers.support import StubCloud, wait_for
from workers.agent.node_agent import (
    BROKER_UNREACHABLE,
    CLOUD_UNREACHABLE,
    LOAD_MISSING_GRACE,
    REPORTS_WAITING,
    WORKER_NOT_RESPONDING,
    NodeAgent,
)
from workers.context import redis_client
from workers.run.outbox import ReportOutbox
from workers.run.reporter import HttpReporter

REGISTRATION = NodeRegistration(cloud_url="", gateway="gw", node="a", token="t")
SETTINGS = Settings(heartbeat_interval=0.05, offline_after=10.0)


@pytest.fixture
def cloud() -> Iterator[StubCloud]:
    with StubCloud() as stub:
        yield stub


@pytest.fixture
def client(cloud: StubCloud) -> Iterator[CloudClient]:
    with CloudClient(cloud.url, token="t") as c:
        yield c


def test_a_heartbeat_carries_the_node_and_machine_state(state: SiteState, cloud: StubCloud,
                                                        client: CloudClient) -> None:
    state.publish_worker_load("a", running=1, limit=3, pids=[11, 12, 13], ttl=10)
    agent = NodeAgent(SETTINGS, REGISTRATION, state=state, cloud=client, role=lambda: "dispatcher",
                      credential_status=lambda: "in sync", worker_grace=0)

    beat = agent.beat_once()

    assert {k: beat[k] for k in ("node", "gateway", "version", "role", "running", "limit",
                                 "credential_status", "problems")} == {
        "node": "a", "gateway": "gw", "version": __version__, "role": "dispatcher",
        "running": 1, "limit": 3, "credential_status": "in sync", "problems": []}
    assert 0 < beat["memory_available"] <= psutil.virtual_memory().total
    assert 0.0 <= beat["cpu_percent"] <= 100.0
    assert beat["network_in"] >= 0 and beat["network_out"] >= 0
    assert state.heartbeats() == {"a": beat}
    ttl_ms = state.redis.pttl(state.keys.heartbeat("a"))
    assert 0 < ttl_ms <= 10_000  # expires after settings.offline_after
    assert cloud.heartbeats == [beat]
    assert agent.cloud_answer == {"status": "Online", "reasons": []}


def test_network_rates_are_bytes_per_second_since_the_last_beat(
        state: SiteState, client: CloudClient) -> None:
    now = [1000.0]
    before_first = psutil.net_io_counters()
    agent = NodeAgent(SETTINGS, REGISTRATION, state=state, cloud=None, clock=lambda: now[0])
    after_first = psutil.net_io_counters()
    for _ in range(20):
        client.heartbeat({"node": "a"})  # real loopback traffic between the two samples
    now[0] += 2.0
    before_second = psutil.net_io_counters()
    beat = agent.beat_once()
    after_second = psutil.net_io_counters()

    received = beat["network_in"] * 2.0
    sent = beat["network_out"] * 2.0
    assert before_second.bytes_recv - after_first.bytes_recv <= received
    assert received <= after_second.bytes_recv - before_first.bytes_recv
    assert before_second.bytes_sent - after_first.bytes_sent <= sent
    assert sent <= after_second.bytes_sent - before_first.bytes_sent
    assert received > 0 and sent > 0


def test_a_missing_worker_load_is_a_problem_after_the_grace_period(state: SiteState) -> None:
    fresh = NodeAgent(SETTINGS, REGISTRATION, state=state, cloud=None, worker_grace=3600)
    assert fresh.beat_once()["problems"] == []
    late = NodeAgent(SETTINGS, REGISTRATION, state=state, cloud=None, worker_grace=0)
    beat = late.beat_once()
    assert beat["problems"] == [WORKER_NOT_RESPONDING]
    assert (beat["running"], beat["limit"]) == (0, 0)


def test_the_agent_survives_a_broker_outage_and_tells_the_cloud(
        cloud: StubCloud, client: CloudClient) -> None:
    dead = redis_client(SETTINGS.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0"), fail_fast=True)
    agent = NodeAgent(SETTINGS, REGISTRATION, state=SiteState(dead, "gw"), cloud=client)

    beat = agent.beat_once()

    assert BROKER_UNREACHABLE in beat["problems"]
    assert cloud.heartbeats[-1]["problems"] == [BROKER_UNREACHABLE]
    dead.close()


def test_the_agent_survives_a_cloud_outage_and_records_it(state: SiteState) -> None:
    with CloudClient(f"http://127.0.0.1:{free_port()}") as away:
        agent = NodeAgent(SETTINGS, REGISTRATION, state=state, cloud=away, worker_grace=3600)
        agent.beat_once()
        assert agent.cloud_reachable is False
        second = agent.beat_once()
    assert second["problems"] == [CLOUD_UNREACHABLE]
    assert state.heartbeats()["a"]["problems"] == [CLOUD_UNREACHABLE]


def test_a_cloud_that_comes_back_gets_no_stale_problem_and_the_outbox(state: SiteState, cloud: StubCloud,
                                                                      client: CloudClient) -> None:
    outbox = ReportOutbox(state, "a")
    outbox.push("s1", {"attempt": 1, "node": "a", "status": "succeeded"})
    agent = NodeAgent(SETTINGS, REGISTRATION, state=state, cloud=client, outbox=outbox,
                      reporter=HttpReporter(client, attempts=1), worker_grace=3600)
    cloud.fail_next = 1
    agent.beat_once()  # the cloud answers 503: unreachable
    assert outbox.size() == 1

    beat = agent.beat_once()

    waiting = f"1 {REPORTS_WAITING}"
    assert beat["problems"] == [CLOUD_UNREACHABLE, waiting]  # what Redis saw
    assert cloud.heartbeats[-1]["problems"] == [waiting]  # the cloud: Limited until it has the backlog
    assert cloud.statuses("s1") == [("succeeded", 1, "a")]
    assert outbox.size() == 0
    assert agent.beat_once()["problems"] == [] and cloud.heartbeats[-1]["problems"] == []


def test_a_long_backlog_is_delivered_over_several_beats(state: SiteState, cloud: StubCloud,
                                                        client: CloudClient) -> None:
    """Each beat delivers for at most one heartbeat interval, so beats keep their pace."""
    outbox = ReportOutbox(state, "a")
    for index in range(400):
        outbox.push(f"s{index}", {"attempt": 1, "node": "a", "status": "succeeded"})
    agent = NodeAgent(Settings(heartbeat_interval=0.01, offline_after=10.0), REGISTRATION, state=state,
                      cloud=client, outbox=outbox, reporter=HttpReporter(client, attempts=1),
                      worker_grace=3600)

    agent.beat_once()

    assert 0 < outbox.size() < 400
    wait_for(lambda: agent.beat_once() and outbox.size() == 0, what="the backlog delivered")
    assert [s for s, _r in cloud.reports] == [f"s{index}" for index in range(400)]


def test_the_agent_thread_keeps_beating_until_stopped(state: SiteState) -> None:
    beats: list[dict[str, Any]] = []

    class Recorder:
        def heartbeat(self, beat: dict[str, Any]) -> dict[str, Any]:
            beats.append(beat)
            return {"status": "Online", "reasons": []}

    agent = NodeAgent(SETTINGS, REGISTRATION, state=state, cloud=Recorder())
    agent.start()
    try:
        wait_for(lambda: len(beats) >= 3, timeout=10, what="three heartbeats")
    finally:
        agent.stop()
    count = len(beats)
    assert beats[0]["ts"] < beats[-1]["ts"]
    assert not agent._loop.running and len(beats) == count


def test_the_pool_is_not_running_until_the_worker_publishes_one_and_when_it_has_no_process(
        state: SiteState) -> None:
    now = [1000.0]
    agent = NodeAgent(SETTINGS, REGISTRATION, state=state, cloud=None, clock=lambda: now[0])
    assert agent.beat_once()["pool_running"] is False  # starting: no pool yet
    state.publish_worker_load("a", running=0, limit=2, pids=[1, 2], ttl=10)
    assert agent.beat_once()["pool_running"] is True
    state.publish_worker_load("a", running=0, limit=0, pids=[], ttl=10)  # a dying pool
    assert agent.beat_once()["pool_running"] is False
    state.publish_worker_load("a", running=0, limit=2, pids=[1, 2], ttl=10)
    agent.beat_once()
    state.redis.delete(state.keys.load("a"))  # lost a moment (a broker restart): not yet gone
    now[0] += LOAD_MISSING_GRACE / 2
    assert agent.beat_once()["pool_running"] is True
    now[0] += LOAD_MISSING_GRACE
    assert agent.beat_once()["pool_running"] is False
    late = NodeAgent(SETTINGS, REGISTRATION, state=state, cloud=None, clock=lambda: now[0], worker_grace=0)
    state.publish_worker_load("a", running=0, limit=2, pids=[1, 2], ttl=10)
    late.beat_once()
    state.redis.delete(state.keys.load("a"))
    now[0] += LOAD_MISSING_GRACE * 2  # "worker process not responding" is no broker outage
    beat = late.beat_once()
    assert beat["problems"] == [WORKER_NOT_RESPONDING] and beat["pool_running"] is False


def test_only_the_dispatcher_sends_its_lease_epoch(state: SiteState) -> None:
    role = ["dispatcher"]
    agent = NodeAgent(SETTINGS, REGISTRATION, state=state, cloud=None, role=lambda: role[0],
                      epoch=lambda: 7)
    assert agent.beat_once()["epoch"] == 7
    role[0] = "worker"
    assert agent.beat_once()["epoch"] == 0


def test_a_clean_stop_sends_a_last_beat_saying_so(state: SiteState, cloud: StubCloud,
                                                  client: CloudClient) -> None:
    agent = NodeAgent(SETTINGS, REGISTRATION, state=state, cloud=client, role=lambda: "dispatcher",
                      epoch=lambda: 3)
    agent.start()
    wait_for(lambda: cloud.heartbeats, timeout=5)
    agent.say_stopped()
    count = len(cloud.heartbeats)
    last = cloud.heartbeats[-1]
    assert (last["stopped"], last["draining"], last["role"], last["epoch"]) == (True, True, "worker", 0)
    assert state.heartbeats()["a"]["stopped"] is True  # the dispatcher places nothing more here
    time.sleep(SETTINGS.heartbeat_interval * 4)  # a negative check: several beat intervals pass
    assert len(cloud.heartbeats) == count  # no beat after it


def test_a_clean_stop_without_broker_or_cloud_does_not_raise() -> None:
    dead = redis_client(SETTINGS.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0"), fail_fast=True)
    with CloudClient(f"http://127.0.0.1:{free_port()}") as away:
        agent = NodeAgent(SETTINGS, REGISTRATION, state=SiteState(dead, "gw"), cloud=away)
        agent.say_stopped()
    dead.close()
