"""What a placement round reads of the pending shards and of the nodes (real Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from dispatcher import placement
from dispatcher.placement import ALL_NODES_BUSY, Placer, node_loads
from dmg.site.boundary import SiteRedis
from dmg.site.state import SiteState
from tests.dispatcher.test_placement import add_shards
from tests.dispatcher.test_plan_round_trips import CountingConnection
from tests.shardkit import planned_spec
from tests.sitekit import beat


class ReadCountingPlacer(Placer):
    """A placer that notes which pending shards' fields it reads."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.read: list[str] = []

    def _read_shards(self, shard_ids: list[str]) -> dict[str, list[Any]]:
        self.read.extend(shard_ids)
        return super()._read_shards(shard_ids)


def counting(state: SiteState, sender: Celery, *, max_queued: int = 0) -> ReadCountingPlacer:
    return ReadCountingPlacer(state=state, sender=sender, cloud=None, holding=lambda: True,
                              max_queued=max_queued)


def test_a_round_reads_only_the_shards_the_nodes_can_take(state: SiteState, sender: Celery) -> None:
    # Given two nodes with 3 free slots between them and 20 pending shards
    beat(state, "a", 2)
    beat(state, "b", 1)
    ids = add_shards(state, 20)
    placer = counting(state, sender)

    # When one round places
    placed = placer.place_pending()

    # Then it placed the first 3 and read the fields of those 3 alone, each once
    assert [p.shard_id for p in placed] == ids[:3]
    assert placer.read == ids[:3]
    assert state.pending() == ids[3:]

    # And a round with no room left reads no shard at all
    assert placer.place_pending() == [] and placer.read == ids[:3]


def test_a_skipped_shard_costs_a_read_of_the_next(state: SiteState, sender: Celery) -> None:
    # Given one free slot, and a first pending shard whose stores no node can reach
    beat(state, "a", 1, stores_unreachable=["far"])
    blocked = ["ar0-00000"]
    state.save_shard(blocked[0], planned_spec(blocked[0], source="far", sink="dst"))
    state.push_pending(*blocked)
    ids = add_shards(state, 3)
    placer = counting(state, sender)

    # When one round places
    placed = placer.place_pending()

    # Then the blocked shard waits and the next one takes the slot (read after the skip)
    assert [p.shard_id for p in placed] == [ids[0]]
    assert placer.read == [*blocked, ids[0]]
    assert state.pending() == [*blocked, *ids[1:]]


def test_a_node_load_read_follows_each_new_heartbeat(state: SiteState) -> None:
    # Given a node's load, read once (each distinct heartbeat value is parsed once)
    beat(state, "a", 2)
    assert [(n.name, n.limit, n.draining) for n in node_loads(state)] == [("a", 2, False)]

    # When its heartbeat changes (a new limit, draining), and its worker publishes a limit
    beat(state, "a", 5, draining=True)
    assert [(n.name, n.limit, n.draining) for n in node_loads(state)] == [("a", 5, True)]
    state.redis.set(state.keys.load("a"), '{"limit": 7}')

    # Then every read sees the current values
    assert [(n.name, n.limit, n.draining) for n in node_loads(state)] == [("a", 7, True)]


@pytest.fixture
def counted(redis_url: str) -> Iterator[SiteState]:
    """The site state of gateway "gw" on a client whose round trips are counted."""
    client = SiteRedis.from_url(redis_url, connection_class=CountingConnection)
    yield SiteState(client, "gw")
    client.close()


def trips_of_round(placer: Placer) -> tuple[int, list[str]]:
    """(Redis round trips of one woken placement round, the shards it placed)."""
    before = CountingConnection.sent
    placed = placer.place_pending(woken=True)
    return CountingConnection.sent - before, [p.shard_id for p in placed]


def test_a_round_reads_the_known_nodes_loads_with_their_names(counted: SiteState, sender: Celery) -> None:
    # Given a full node (one slot, one shard running) and a shard waiting
    beat(counted, "a", 1)
    counted.redis.sadd(counted.keys.running("a"), "ar0-00000")
    ids = add_shards(counted, 1)
    placer = counting(counted, sender)

    # When two rounds find no room: the first learns the nodes' names (names, then their
    # loads: two round trips), the second reads the loads of the nodes it knows with the names
    # (one round trip); the backlog's wait is noted from the pending list both read whole
    assert trips_of_round(placer) == (2, [])
    assert trips_of_round(placer) == (1, [])
    assert placer.wait_reason(ids[0]) == ALL_NODES_BUSY

    # Then a node that joins is seen by the next round (its names differ: the loads are read
    # again for them), which places the shard there
    beat(counted, "b", 1)
    _trips, placed = trips_of_round(placer)
    assert placed == ids
    assert counted.shard(ids[0])["node"] == "b"


def test_a_backlog_longer_than_a_window_is_noted_whole(state: SiteState, sender: Celery,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Given pending windows of 4 entries, one free slot and 10 shards pending
    monkeypatch.setattr(placement, "WINDOW", 4)
    beat(state, "a", 1)
    ids = add_shards(state, 10)
    placer = counting(state, sender)

    # When a round places one, and 3 more shards arrive before the next round
    assert [p.shard_id for p in placer.place_pending()] == ids[:1]
    later = [f"ar2-{i:05d}" for i in range(3)]
    for shard_id in later:
        state.save_shard(shard_id, planned_spec(shard_id, source="src", sink="dst"))
    state.push_pending(*later)
    assert placer.place_pending() == []

    # Then every waiting shard, beyond the first window too, waits for a busy node
    assert {s: placer.wait_reason(s) for s in [*ids[1:], *later]} == dict.fromkeys([*ids[1:], *later],
                                                                                   ALL_NODES_BUSY)
