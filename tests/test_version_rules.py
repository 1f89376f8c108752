"""The version rules (dmg.version, dmg.status, dmg.placement) and the rolling upgrade's
loop (dmg.rolling) against an in-memory cloud, in pure terms."""

from __future__ import annotations

from typing import Any

import pytest

from dmg.cloud.service.upgrades import UPGRADE_REQUESTED, UPGRADE_RUNNING, upgrade_after_beat
from dmg.errors import Conflict, Fatal, Retryable
from dmg.placement import NodeLoad, choose_node
from dmg.rolling import is_back, roll, roll_order, upgrade_node
from dmg.status import LIMITED, OFFLINE, ONLINE, UPGRADING, NodeStatus, node_status, upgrading_status
from dmg.version import majority_version, registration_refusal, version_reason


def test_the_gateway_version_is_the_majority_version() -> None:
    assert majority_version(["0.1.0", "0.1.0", "0.2.0"]) == "0.1.0"
    assert majority_version(["0.2.0", "0.2.0", "0.1.0"]) == "0.2.0"
    assert majority_version(["1.10.0", "1.9.0", "1.10.0"]) == "1.10.0"
    assert majority_version([]) is None
    assert majority_version(["", ""]) is None  # nodes that never said do not count


def test_a_tie_goes_to_the_lease_holder_when_it_is_in_it() -> None:
    """One node claiming a version cannot outvote the dispatcher of a two-node gateway."""
    assert majority_version(["0.1.0", "9.9.9"], prefer="0.1.0") == "0.1.0"
    assert majority_version(["9.9.9", "0.1.0"], prefer="0.1.0") == "0.1.0"
    assert majority_version(["0.2.0", "0.2.0", "0.1.0"], prefer="0.1.0") == "0.2.0"  # a real majority
    assert majority_version(["0.1.0", "0.2.0"], prefer="0.3.0") == "0.2.0"  # holder not tied: higher


def test_a_tie_goes_to_the_higher_version() -> None:
    assert majority_version(["0.1.0", "0.2.0"]) == "0.2.0"
    assert majority_version(["0.2.0", "0.1.0"]) == "0.2.0"
    assert majority_version(["1.9.0", "1.10.0", "1.10.0", "1.9.0", "0.5.0"]) == "1.10.0"  # numeric order


def test_a_node_on_another_version_is_limited_with_both_versions() -> None:
    status = node_status(last_heartbeat=99.0, now=100.0, offline_after=10.0, version="0.2.0",
                         gateway_version="0.1.0")
    assert status == NodeStatus(LIMITED, ("runs 0.2.0, gateway runs 0.1.0",))
    older = node_status(last_heartbeat=99.0, now=100.0, offline_after=10.0, version="0.1.0",
                        gateway_version="0.2.0", problems=["broker unreachable"])
    assert older == NodeStatus(LIMITED, ("broker unreachable", "runs 0.1.0, gateway runs 0.2.0"))
    same = node_status(last_heartbeat=99.0, now=100.0, offline_after=10.0, version="0.2.0",
                       gateway_version="0.2.0")
    assert same == NodeStatus(ONLINE)
    assert version_reason("0.2.0", None) == "" and version_reason("", "0.2.0") == ""


def test_a_node_older_than_the_gateway_cannot_register() -> None:
    refusal = registration_refusal("0.1.0", "0.2.0", gateway="site")
    assert "0.1.0" in refusal and "0.2.0" in refusal and "'site'" in refusal and "cannot register" in refusal
    assert registration_refusal("0.2.0", "0.2.0", gateway="site") == ""
    assert registration_refusal("0.3.0", "0.2.0", gateway="site") == ""  # newer may join
    assert registration_refusal("0.1.0", None, gateway="site") == ""  # the first node


def test_an_upgrade_asked_shows_upgrading_unless_offline() -> None:
    online = NodeStatus(ONLINE)
    assert upgrading_status(online, "", version="0.1.0") == online
    asked = upgrading_status(online, UPGRADE_REQUESTED, version="0.1.0")
    running = upgrading_status(NodeStatus(LIMITED, ("x",)), UPGRADE_RUNNING, version="0.1.0")
    assert asked.status == running.status == UPGRADING
    assert "requested" in asked.reasons[0] and "restarts" in running.reasons[0]
    offline = NodeStatus(OFFLINE, ("no heartbeat for 12 s (threshold 10 s)",))
    assert upgrading_status(offline, UPGRADE_RUNNING, version="0.1.0") == offline


def test_the_upgrade_state_follows_the_heartbeats() -> None:
    assert upgrade_after_beat(UPGRADE_REQUESTED, upgrading=False) == UPGRADE_REQUESTED  # not taken up yet
    assert upgrade_after_beat(UPGRADE_REQUESTED, upgrading=True) == UPGRADE_RUNNING
    assert upgrade_after_beat(UPGRADE_RUNNING, upgrading=True) == UPGRADE_RUNNING
    assert upgrade_after_beat(UPGRADE_RUNNING, upgrading=False) == ""  # its next process: done
    assert upgrade_after_beat("", upgrading=False) == ""


def test_placement_prefers_the_majority_version_while_it_can_take_work() -> None:
    nodes = [NodeLoad("a", limit=2, version="0.1.0"), NodeLoad("b", limit=2, version="0.1.0"),
             NodeLoad("new", limit=8, version="0.2.0")]
    # "new" has the most free slots, but runs the minority version
    assert [choose_node(nodes).name for _ in range(1)] == ["a"]
    nodes[0].running = nodes[1].running = 2  # the majority is full: the gateway keeps moving data
    chosen = choose_node(nodes)
    assert chosen is not None and chosen.name == "new"
    nodes[0].running = 1
    nodes[0].unreachable_stores = frozenset({"lake"})  # the majority node cannot take this shard
    chosen = choose_node(nodes, stores=["lake"])
    assert chosen is not None and chosen.name == "new"
    unknown = [NodeLoad("old", limit=1, version=""), NodeLoad("x", limit=4, version="0.2.0"),
               NodeLoad("y", limit=1, version="0.1.0")]
    assert choose_node(unknown).name == "x"  # type: ignore[union-attr]  # tie: higher version


class MemoryCloud:
    """The user side of a cloud for :mod:`dmg.rolling`: nodes that come back on ``installed``
    a few looks after they are asked to upgrade (``stuck``: never)."""

    def __init__(self, versions: dict[str, str], *, installed: str, dispatcher: str = "",
                 stuck: str = "") -> None:
        self.rows = {n: {"name": n, "status": ONLINE, "reasons": [], "version": v, "limit": 2, "upgrade": "",
                         "role": "dispatcher" if n == dispatcher else "worker"} for n, v in versions.items()}
        self.installed, self.stuck = installed, stuck
        self.looks: dict[str, int] = {}
        self.asked: list[str] = []

    def gateway(self, name: str) -> dict[str, Any]:
        return {"name": name, "version": majority_version(r["version"] for r in self.rows.values())}

    def upgrade_node(self, gateway: str, node: str) -> dict[str, Any]:
        if any(r["upgrade"] for r in self.rows.values()):
            raise Conflict("another node is upgrading")
        self.asked.append(node)
        self.rows[node].update(upgrade="requested", status=UPGRADING)
        self.looks[node] = 0
        return self.rows[node]

    def list_nodes(self, gateway: str) -> list[dict[str, Any]]:
        for node, looks in self.looks.items():
            self.looks[node] = looks + 1
            if looks == 3 and node != self.stuck:
                self.rows[node].update(upgrade="", version=self.installed)
        top = self.gateway(gateway)["version"]
        for row in self.rows.values():
            if not row["upgrade"]:
                why = version_reason(row["version"], top)
                row.update(status=LIMITED if why else ONLINE, reasons=[why] if why else [])
        return [dict(r) for r in self.rows.values()]


def _fake_time() -> tuple[Any, Any]:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds
    return (lambda: now[0]), sleep


def test_a_roll_upgrades_one_node_at_a_time_the_dispatcher_last() -> None:
    cloud = MemoryCloud({"n1": "0.1.0", "n2": "0.1.0", "n3": "0.1.0"}, installed="0.2.0", dispatcher="n1")
    clock, sleep = _fake_time()
    lines: list[str] = []
    assert roll(cloud, "site", timeout=30, echo=lines.append, clock=clock, sleep=sleep) == ["n2", "n3", "n1"]
    assert cloud.asked == ["n2", "n3", "n1"]
    assert [line for line in lines if "version:" in line] == [
        "gateway site version: 0.1.0", "gateway site version: 0.2.0", "gateway site version: 0.2.0"]
    assert {r["version"] for r in cloud.rows.values()} == {"0.2.0"}


def test_a_node_that_does_not_come_back_stops_the_roll_naming_it() -> None:
    cloud = MemoryCloud({"n1": "0.1.0", "n2": "0.1.0", "n3": "0.1.0"}, installed="0.2.0", stuck="n2")
    clock, sleep = _fake_time()
    with pytest.raises(Retryable) as stopped:
        roll(cloud, "site", timeout=20, clock=clock, sleep=sleep)
    assert "node n2 did not come back within 20 s" in stopped.value.message
    assert "roll stopped" in stopped.value.message
    assert cloud.asked == ["n1", "n2"]  # n3 was not touched


def test_a_node_back_on_its_old_version_is_an_error() -> None:
    cloud = MemoryCloud({"n1": "0.1.0", "n2": "0.1.0"}, installed="0.1.0")
    clock, sleep = _fake_time()
    with pytest.raises(Fatal) as same:
        upgrade_node(cloud, "site", "n1", timeout=20, clock=clock, sleep=sleep)
    assert "node n1 restarted but still runs 0.1.0" in same.value.message


def test_a_roll_started_again_skips_the_nodes_already_upgraded() -> None:
    rows = [{"name": "n1", "version": "0.2.0", "role": "worker"},
            {"name": "n2", "version": "0.1.0", "role": "dispatcher"},
            {"name": "n3", "version": "0.1.0", "role": "worker"}]
    assert roll_order(rows) == ["n3", "n2"]
    assert roll_order([{**r, "version": "0.2.0"} for r in rows]) == ["n1", "n3", "n2"]


def test_back_means_taking_work_online_or_limited_only_by_version() -> None:
    row = {"status": LIMITED, "reasons": ["runs 0.2.0, gateway runs 0.1.0"], "version": "0.2.0",
           "limit": 2, "upgrade": ""}
    assert is_back(row, gateway_version="0.1.0")
    assert not is_back({**row, "reasons": [*row["reasons"], "broker unreachable"]}, gateway_version="0.1.0")
    assert not is_back({**row, "limit": 0}, gateway_version="0.1.0")
    assert not is_back({**row, "upgrade": "upgrading"}, gateway_version="0.1.0")
    assert is_back({**row, "status": ONLINE, "reasons": []}, gateway_version="0.2.0")
