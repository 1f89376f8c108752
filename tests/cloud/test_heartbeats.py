"""Heartbeats and the node and gateway statuses the cloud derives from them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from dmg.cloud.client import CloudClient
from dmg.errors import BadInput, StaleAttempt
from tests.cloud.conftest import Cloud, make_site
from tests.waiting import wait_for

BEAT: dict[str, Any] = {
    "role": "dispatcher", "running": 2, "limit": 4, "cpu_percent": 37.5,
    "memory_available": 8 * 2**30, "network_in": 1000.0, "network_out": 2000.0, "version": "1.0.0",
    "problems": [], "credential_status": "in sync", "stores_unreachable": [],
}


def _node(user: CloudClient, gateway: str, name: str) -> dict[str, Any]:
    return next(n for n in user.list_nodes(gateway) if n["name"] == name)


def test_heartbeat_is_stored_and_shown(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user, nodes=("n1",))
    before = time.time()
    with cloud.node(site.tokens["n1"]) as node:
        assert node.heartbeat(BEAT) == {"status": "Online", "reasons": [], "upgrade": False, "proxy": ""}
    shown = _node(user, site.gateway, "n1")
    for field in ("role", "running", "limit", "cpu_percent", "memory_available", "network_in",
                  "network_out", "version"):
        assert shown[field] == BEAT[field], field
    assert shown["credential_status"] == "none"  # derived by the cloud: the gateway has no credential
    assert shown["status"] == "Online" and shown["reasons"] == []
    assert shown["last_heartbeat"] >= before - 1
    gateway = user.gateway(site.gateway)
    assert gateway["status"] == "Online" and gateway["version"] == "1.0.0"


def test_what_sized_a_node_is_stored_and_a_bad_value_refused(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user, nodes=("n1",))
    with cloud.node(site.tokens["n1"]) as node:
        node.heartbeat(BEAT)  # a node too old to say
        assert _node(user, site.gateway, "n1")["sized_by"] == ""
        node.heartbeat({**BEAT, "sized_by": "cgroup"})
        assert _node(user, site.gateway, "n1")["sized_by"] == "cgroup"
        with pytest.raises(BadInput):
            node.heartbeat({**BEAT, "sized_by": "guess"})
    assert _node(user, site.gateway, "n1")["sized_by"] == "cgroup"


def test_reported_problems_make_a_node_limited(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user, nodes=("n1", "n2"))
    with cloud.node(site.tokens["n1"]) as n1, cloud.node(site.tokens["n2"]) as n2:
        n1.heartbeat(BEAT)
        answer = n2.heartbeat({**BEAT, "role": "worker", "problems": ["cannot reach the broker"],
                               "stores_unreachable": ["lake"]})
    assert answer["status"] == "Limited"
    assert answer["reasons"] == ["cannot reach the broker", "cannot reach store(s) lake"]
    shown = _node(user, site.gateway, "n2")
    assert shown["status"] == "Limited" and shown["stores_unreachable"] == ["lake"]
    assert user.gateway(site.gateway)["status"] == "Limited"


def test_a_node_on_another_version_is_limited(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user, nodes=("a", "b", "c"))
    with cloud.node(site.tokens["a"]) as a, cloud.node(site.tokens["b"]) as b, \
            cloud.node(site.tokens["c"]) as c:
        a.heartbeat(BEAT)
        b.heartbeat(BEAT)
        answer = c.heartbeat({**BEAT, "version": "1.1.0"})
    assert answer["status"] == "Limited"
    assert "runs 1.1.0, gateway runs 1.0.0" in answer["reasons"]
    assert user.gateway(site.gateway)["version"] == "1.0.0"


def test_draining_and_differing_config(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user, nodes=("a", "b", "c"))
    with cloud.node(site.tokens["a"]) as a, cloud.node(site.tokens["b"]) as b, \
            cloud.node(site.tokens["c"]) as c:
        a.heartbeat({**BEAT, "config_fingerprint": "x"})
        b.heartbeat({**BEAT, "config_fingerprint": "x", "draining": True})
        answer = c.heartbeat({**BEAT, "config_fingerprint": "y"})
    assert answer["status"] == "Inactive"
    statuses = {n["name"]: n["status"] for n in user.list_nodes(site.gateway)}
    assert statuses == {"a": "Online", "b": "Upgrading", "c": "Inactive"}


def test_bad_heartbeats_are_refused(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user, nodes=("n1",))
    with cloud.node(site.tokens["n1"]) as node:
        for bad, field in (({"running": -1}, "running"), ({"problems": "one"}, "problems"),
                           ({"cpu_percent": "lots"}, "cpu_percent")):
            with pytest.raises(BadInput) as refused:
                node.heartbeat(bad)
            assert field in refused.value.message


def test_a_silent_node_goes_offline(start_cloud: Callable[..., Cloud]) -> None:
    fast = start_cloud(offline_after=1.0)
    with fast.user() as user:
        site = make_site(user, nodes=("a", "b"))
        with fast.node(site.tokens["a"]) as a, fast.node(site.tokens["b"]) as b:
            a.heartbeat(BEAT)
            b.heartbeat(BEAT)
            # Given a keeps beating and b falls silent, when the threshold passes, b is Offline.

            def b_offline() -> bool:
                a.heartbeat(BEAT)
                return _node(user, site.gateway, "b")["status"] == "Offline"

            wait_for(b_offline, timeout=20, what="node b Offline")
        shown = _node(user, site.gateway, "b")
        assert "no heartbeat for" in shown["reasons"][0]
        assert user.gateway(site.gateway)["status"] in ("Limited", "Offline")
        wait_for(lambda: user.gateway(site.gateway)["status"] == "Offline", timeout=20,
                 what="the gateway Offline")
        never = make_site(user, nodes=("silent",))
        assert _node(user, never.gateway, "silent")["reasons"] == ["never sent a heartbeat"]


def test_a_node_the_dispatcher_reports_gone_is_offline_until_it_beats_again(cloud: Cloud,
                                                                          user: CloudClient) -> None:
    site = make_site(user, nodes=("n1", "n2"))
    with cloud.node(site.tokens["n1"]) as dispatcher, cloud.node(site.tokens["n2"]) as worker:
        dispatcher.heartbeat(BEAT)
        worker.heartbeat({**BEAT, "role": "worker"})
        dispatcher.claim_activity_runs(epoch=5, wait=0)  # the gateway's epoch is 5 now

        dispatcher.report_nodes_gone(["n2", "n1", "nobody"], epoch=5)  # itself and strangers: ignored
        shown = _node(user, site.gateway, "n2")
        assert shown["status"] == "Offline"
        assert shown["reasons"] == ["its processes are gone (no connection to the site broker)"]
        assert _node(user, site.gateway, "n1")["status"] == "Online"
        assert user.gateway(site.gateway)["status"] != "Online"

        with pytest.raises(StaleAttempt):  # an older dispatcher cannot mark anyone
            worker.report_nodes_gone(["n1"], epoch=4)
        assert _node(user, site.gateway, "n1")["status"] == "Online"

        worker.heartbeat({**BEAT, "role": "worker"})  # it lives after all: Online again
        assert _node(user, site.gateway, "n2")["status"] == "Online"


def test_the_api_shows_stopped_and_poolless_nodes_offline_and_one_dispatcher(
        cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user, nodes=("a", "b", "c"))
    with cloud.node(site.tokens["a"]) as a, cloud.node(site.tokens["b"]) as b, \
            cloud.node(site.tokens["c"]) as c:
        a.heartbeat({**BEAT, "epoch": 3})  # a dispatcher the others no longer follow
        b.heartbeat({**BEAT, "epoch": 4})
        c.heartbeat({**BEAT, "role": "worker", "problems": ["store 'lake': unreachable"]})
        rows = {r["name"]: r for r in user.list_nodes(site.gateway)}
        assert [rows[n]["role"] for n in ("a", "b", "c")] == ["worker", "dispatcher", "worker"]
        gateway = user.gateway(site.gateway)
        assert gateway["status"] == "Limited"
        assert gateway["reasons"] == ["c: Limited (store 'lake': unreachable)"]
        assert [n["role"] for n in gateway["nodes"]] == ["worker", "dispatcher", "worker"]

        assert b.heartbeat({**BEAT, "stopped": True, "role": "worker"}) == {
            "status": "Offline", "reasons": ["stopped"], "upgrade": False, "proxy": ""}
        assert a.heartbeat({**BEAT, "pool_running": False, "role": "worker"}) == {
            "status": "Offline", "reasons": ["worker pool not running"], "upgrade": False, "proxy": ""}
        gateway = user.gateway(site.gateway)
        assert gateway["status"] == "Limited"  # c still moves data
        assert gateway["reasons"][:2] == ["a: Offline (worker pool not running)", "b: Offline (stopped)"]
        c.heartbeat({**BEAT, "stopped": True})
        gateway = user.gateway(site.gateway)
        assert gateway["status"] == "Offline" and gateway["reasons"][0] == "no node can do work"
        assert "dispatcher" not in {r["role"] for r in user.list_nodes(site.gateway)}
        b.heartbeat(BEAT)  # started again: a beat without "stopped"
        assert _node(user, site.gateway, "b")["status"] == "Online"
