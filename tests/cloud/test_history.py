"""Node metrics history: raw heartbeats for an hour, 1-minute averages for a day,
10-minute averages after that, everything older than the retention pruned."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from dmg.cloud.db import Database
from dmg.cloud.models import NodeSample
from dmg.cloud.schemas import Heartbeat
from dmg.cloud.service import CloudService, NodeIdentity
from dmg.cloud.service.history import MINUTE, RAW, TEN_MINUTES
from dmg.errors import NotFound
from settings import Settings
from tests.servers.postgres import postgres_server  # noqa: F401

HOUR = 3600.0
DAY = 86400.0
START = 1_700_000_000.0 - (1_700_000_000.0 % 600)  # a 10-minute boundary


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cloud.db'}"
    server = request.getfixturevalue("postgres_server")
    return str(server.create_database(f"history_{uuid.uuid4().hex[:12]}"))


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Iterator[tuple[CloudService, Clock, NodeIdentity]]:
    db = Database(database_url)
    db.migrate()
    clock = Clock()
    svc = CloudService(Settings(data_dir=tmp_path, cloud_history_retention=3 * DAY), db, clock=clock)
    keys = svc.create_gateway("gw")
    token = svc.register_node(key=keys["key1"], name="n1", version="0.1.0")["token"]
    try:
        yield svc, clock, svc.authenticate_node(token)
    finally:
        db.dispose()


def beat(site: tuple[CloudService, Clock, NodeIdentity], *, at: float, cpu: float, running: int = 1) -> None:
    svc, clock, node = site
    clock.now = at
    svc.heartbeat(node, Heartbeat(cpu_percent=cpu, running=running, limit=4, memory_available=1000,
                                  network_in=10.0, network_out=20.0))


def history(svc: CloudService, clock: Clock, *, since: float) -> list[dict[str, Any]]:
    samples: list[dict[str, Any]] = svc.node_history("gw", "n1", since=since)["samples"]
    return samples


def test_recent_heartbeats_are_kept_as_received(site: tuple[CloudService, Clock, NodeIdentity]) -> None:
    svc, clock, _ = site
    for i in range(5):
        beat(site, at=START + 2 * i, cpu=10.0 * i)
    samples = history(svc, clock, since=HOUR)
    assert [s["resolution"] for s in samples] == [RAW] * 5
    assert [s["cpu_percent"] for s in samples] == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert samples[0]["limit"] == 4 and samples[0]["network_out"] == 20.0


def test_heartbeats_older_than_an_hour_become_one_minute_averages(
        site: tuple[CloudService, Clock, NodeIdentity]) -> None:
    svc, clock, _ = site
    # Two minutes of beats every 10 s: cpu 0..50 in the first minute, 60..110 in the second.
    for i in range(12):
        beat(site, at=START + 10 * i, cpu=10.0 * i, running=i % 2)
    clock.now = START + HOUR + 2 * MINUTE + 1
    svc.compact_history()
    samples = history(svc, clock, since=2 * HOUR)
    assert [(s["resolution"], s["at"], s["samples"]) for s in samples] == [
        (MINUTE, START, 6), (MINUTE, START + MINUTE, 6)]
    assert samples[0]["cpu_percent"] == pytest.approx(25.0)
    assert samples[1]["cpu_percent"] == pytest.approx(85.0)
    assert samples[0]["running"] == pytest.approx(0.5)
    # Idempotent: a second compaction changes nothing.
    svc.compact_history()
    assert history(svc, clock, since=2 * HOUR) == samples


def test_a_minute_still_filling_is_not_cut(site: tuple[CloudService, Clock, NodeIdentity]) -> None:
    svc, clock, _ = site
    beat(site, at=START + 30, cpu=10.0)
    beat(site, at=START + 50, cpu=30.0)
    clock.now = START + 40 + HOUR  # the beat at +30 is over an hour old, its minute is not complete
    svc.compact_history()
    assert [s["resolution"] for s in history(svc, clock, since=2 * HOUR)] == [RAW, RAW]
    clock.now = START + MINUTE + HOUR
    svc.compact_history()
    [bucket] = history(svc, clock, since=2 * HOUR)
    assert (bucket["resolution"], bucket["samples"], bucket["cpu_percent"]) == (MINUTE, 2, 20.0)


def test_minutes_older_than_a_day_become_ten_minute_averages_and_the_retention_prunes(
        site: tuple[CloudService, Clock, NodeIdentity]) -> None:
    svc, clock, _ = site
    # One beat a minute for 20 minutes, at cpu = the minute's number.
    for minute in range(20):
        beat(site, at=START + minute * MINUTE, cpu=float(minute))
    clock.now = START + DAY + 20 * MINUTE
    svc.compact_history()
    samples = history(svc, clock, since=2 * DAY)
    assert [(s["resolution"], s["at"], s["samples"]) for s in samples] == [
        (TEN_MINUTES, START, 10), (TEN_MINUTES, START + TEN_MINUTES, 10)]
    assert [s["cpu_percent"] for s in samples] == [pytest.approx(4.5), pytest.approx(14.5)]
    # Past the retention (3 days here), everything goes; newer beats stay.
    beat(site, at=START + 3 * DAY + 5 * MINUTE, cpu=99.0)
    svc.compact_history()
    samples = history(svc, clock, since=10 * DAY)
    assert [(s["resolution"], s["cpu_percent"]) for s in samples] == [(TEN_MINUTES, 14.5), (RAW, 99.0)]


def test_history_of_an_unknown_node_is_not_found(site: tuple[CloudService, Clock, NodeIdentity]) -> None:
    svc, _, _ = site
    with pytest.raises(NotFound, match="'ghost'"):
        svc.node_history("gw", "ghost", since=HOUR)
    with pytest.raises(NotFound, match="'nogw'"):
        svc.node_history("nogw", "n1", since=HOUR)


def test_a_removed_nodes_history_goes_with_it(site: tuple[CloudService, Clock, NodeIdentity]) -> None:
    svc, _clock, _ = site
    beat(site, at=START, cpu=1.0)
    svc.remove_node("gw", "n1")
    with svc.db.read() as session:
        assert session.scalar(select(func.count()).select_from(NodeSample)) == 0
