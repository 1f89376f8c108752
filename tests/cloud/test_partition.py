"""Inactive for real: a node on another Redis (a broker partition) and a node whose
configuration differs are Inactive with the difference named, and get no work.

Three node agents beat to a real cloud; n1 and n2 share one real Redis, n3 is pointed
at a second real Redis. Placement reads the site state as the dispatcher does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.placement import node_loads
from dmg.cloud.client import CloudClient
from dmg.embedded.redis import EmbeddedRedis
from dmg.procs import free_port
from dmg.registration import NodeRegistration
from dmg.site.boundary import SiteRedis
from dmg.site.state import SiteState
from settings import Settings
from tests.cloud.conftest import Cloud, make_site
from workers.agent.node_agent import NodeAgent


@pytest.fixture
def other_state(tmp_path: Path, redis_server: EmbeddedRedis) -> Iterator[SiteState]:
    """Gateway "gw"'s site state on a second Redis server of this test's own."""
    server = EmbeddedRedis(tmp_path / "redis-b", free_port()).start()
    client = SiteRedis.from_url(f"redis://127.0.0.1:{server.port}/0")
    try:
        yield SiteState(client, "gw")
    finally:
        client.close()
        server.stop()


def _agent(tmp_path: Path, cloud: Cloud, state: SiteState, gateway: str, node: str, token: str,
           **settings: float) -> NodeAgent:
    registration = NodeRegistration(cloud_url=cloud.url, gateway=gateway, node=node, token=token)
    state.publish_worker_load(node, running=0, limit=2, pids=[], ttl=120)
    agent = NodeAgent(Settings(data_dir=tmp_path / node, **settings), registration, state=state,
                      cloud=CloudClient(cloud.url, token=token), worker_grace=3600)
    return agent


def _statuses(user: CloudClient, gateway: str) -> dict[str, dict[str, object]]:
    return {n["name"]: n for n in user.list_nodes(gateway)}


def test_a_node_on_another_broker_is_inactive_and_says_why(
        tmp_path: Path, cloud: Cloud, user: CloudClient, state: SiteState, other_state: SiteState) -> None:
    site = make_site(user, nodes=("n1", "n2", "n3"))
    agents = {name: _agent(tmp_path, cloud, st, site.gateway, name, site.tokens[name])
              for name, st in (("n1", state), ("n2", state), ("n3", other_state))}
    for _ in range(2):  # the second round sees the first round's heartbeats in the broker
        for agent in agents.values():
            agent.beat_once()

    rows = _statuses(user, site.gateway)
    assert rows["n1"]["status"] == rows["n2"]["status"] == "Online", rows
    assert rows["n3"]["status"] == "Inactive"
    [reason] = rows["n3"]["reasons"]  # type: ignore[misc]
    assert reason.startswith("cannot reach the other nodes through the broker: it sees none of n1, n2")
    gateway = user.gateway(site.gateway)
    assert gateway["status"] == "Limited" and gateway["reasons"] == [f"n3: Inactive ({reason})"]

    # Its beat repeats the cloud's word; a dispatcher on its broker places nothing on it.
    agents["n3"].beat_once()
    assert agents["n3"].last_beat and agents["n3"].last_beat["inactive"] is True
    assert [load.draining for load in node_loads(other_state)] == [True]

    # Pointed back at the shared broker, it is Online again.
    agents["n3"].state = state
    for _ in range(2):
        for agent in agents.values():
            agent.beat_once()
    assert {n: r["status"] for n, r in _statuses(user, site.gateway).items()} == {
        "n1": "Online", "n2": "Online", "n3": "Online"}
    assert not any(load.draining for load in node_loads(state))


def test_a_node_whose_settings_differ_is_inactive_and_gets_no_work(
        tmp_path: Path, cloud: Cloud, user: CloudClient, state: SiteState) -> None:
    site = make_site(user, nodes=("n1", "n2", "n3"))
    agents = {name: _agent(tmp_path, cloud, state, site.gateway, name, site.tokens[name],
                           **({"lease_ttl": 3.0} if name == "n3" else {}))
              for name in ("n1", "n2", "n3")}
    for _ in range(2):
        for agent in agents.values():
            agent.beat_once()
    rows = _statuses(user, site.gateway)
    assert rows["n3"]["status"] == "Inactive"
    default = Settings().lease_ttl
    assert rows["n3"]["reasons"] == [f"lease ttl differs: 3.0 vs majority {default}"]
    loads = {load.name: load for load in node_loads(state)}
    assert loads["n3"].draining and not loads["n1"].draining and not loads["n2"].draining
