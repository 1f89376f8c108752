"""Upgrades asked in the cloud reach the node in its heartbeat's answer, against a real cloud.

Given a gateway of three nodes beating on 1.0.0; when a user asks node ``a`` to upgrade;
then ``a`` shows Upgrading, its heartbeat answers say ``upgrade`` until it beats
``upgrading``, a beat of its next process (on 1.1.0, not upgrading) ends the upgrade and
shows it Limited with both versions; one node upgrades at a time; an Offline or unknown node
is refused in one line; a node token cannot ask (403), nor can a removed one (401).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from dmg.cloud.client import CloudClient
from dmg.errors import Conflict, NotFound
from tests.cloud.conftest import Cloud, make_site

BEAT: dict[str, Any] = {"role": "worker", "running": 0, "limit": 2, "version": "1.0.0", "problems": []}


def _row(user: CloudClient, gateway: str, name: str) -> dict[str, Any]:
    return next(n for n in user.list_nodes(gateway) if n["name"] == name)


def test_an_upgrade_travels_in_the_heartbeat_answer_until_the_next_process_beats(
        cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user, nodes=("a", "b", "c"))
    with cloud.node(site.tokens["a"]) as a, cloud.node(site.tokens["b"]) as b, \
            cloud.node(site.tokens["c"]) as c:
        for node in (a, b, c):
            assert node.heartbeat(BEAT)["upgrade"] is False

        asked = user.upgrade_node(site.gateway, "a")
        assert asked["status"] == "Upgrading" and asked["upgrade"] == "requested"
        assert "requested" in asked["reasons"][0]
        assert user.upgrade_node(site.gateway, "a")["upgrade"] == "requested"  # idempotent
        with pytest.raises(Conflict) as one_at_a_time:
            user.upgrade_node(site.gateway, "b")
        refused = one_at_a_time.value.message
        assert "'a'" in refused and "one node upgrades at a time" in refused

        assert a.heartbeat(BEAT) == {"status": "Upgrading", "reasons": asked["reasons"], "upgrade": True,
                                     "proxy": ""}
        assert b.heartbeat(BEAT)["upgrade"] is False  # asked of a only
        taken = a.heartbeat({**BEAT, "upgrading": True, "draining": True})
        assert taken["status"] == "Upgrading" and taken["upgrade"] is False  # the cloud stops asking
        assert _row(user, site.gateway, "a")["upgrade"] == "upgrading"

        back = a.heartbeat({**BEAT, "version": "1.1.0"})  # its next process
        assert back == {"status": "Limited", "reasons": ["runs 1.1.0, gateway runs 1.0.0"], "upgrade": False,
                        "proxy": ""}
        assert _row(user, site.gateway, "a")["upgrade"] == ""
        assert user.gateway(site.gateway)["version"] == "1.0.0"

        user.upgrade_node(site.gateway, "b")  # now b may go
        b.heartbeat({**BEAT, "upgrading": True})
        b.heartbeat({**BEAT, "version": "1.1.0"})
        gateway = user.gateway(site.gateway)
        assert gateway["version"] == "1.1.0"  # the majority moved
        rows = {n["name"]: n for n in gateway["nodes"]}
        assert rows["c"]["status"] == "Limited" and rows["c"]["reasons"] == ["runs 1.0.0, gateway runs 1.1.0"]
        assert rows["a"]["status"] == rows["b"]["status"] == "Online"


def test_an_offline_or_unknown_node_is_refused_in_one_line(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user, nodes=("a", "quiet"))
    with cloud.node(site.tokens["a"]) as a:
        a.heartbeat(BEAT)
    with pytest.raises(Conflict) as offline:
        user.upgrade_node(site.gateway, "quiet")  # never sent a heartbeat
    assert "'quiet' is Offline" in offline.value.message and "\n" not in str(offline.value)
    with pytest.raises(NotFound) as unknown:
        user.upgrade_node(site.gateway, "nobody")
    assert "'nobody'" in unknown.value.message


def test_only_a_user_token_asks_for_an_upgrade(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user, nodes=("a", "b"))
    url = f"{cloud.url}/api/v1/gateways/{site.gateway}/nodes/b/upgrade"
    denied = httpx.post(url, headers={"Authorization": f"Bearer {site.tokens['a']}"}, timeout=30)
    assert denied.status_code == 403 and denied.json()["error"]
    user.remove_node(site.gateway, "a")
    revoked = httpx.post(url, headers={"Authorization": f"Bearer {site.tokens['a']}"}, timeout=30)
    assert revoked.status_code == 401
    assert _row(user, site.gateway, "b")["upgrade"] == ""
