"""Statuses that tell the truth, with real node processes (issue 8, item 5).

- A node stopped with SIGTERM shows Offline ("stopped") at once, long before the
  heartbeat threshold; a SIGKILLed dispatcher never leaves two rows saying
  ``dispatcher``: at most one node does at every look, and after the failover it is
  the lease holder while the dead one shows ``worker`` until it is Offline.
- Nodes that are all Limited because a store no activity of the run uses is
  unreachable leave the gateway Limited (with that reason), and data still moves; a
  short Redis outage makes the gateway Limited, never Offline.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dmg.embedded.faults import SiteUnderTest
from dmg.embedded.readiness import node_ready
from dmg.status import STOPPED
from tests.ha.nodekit import dispatcher_of, site_state, successor_of
from tests.ha.sitekit import (
    all_nodes,
    assert_copied_exactly,
    figure,
    ha_settings,
    limited_by,
    node_rows,
    require_redis,
    running_site,
    throttled_copy,
    wait_for,
)
from tests.waiting import holds_for
from workers.agent.node_agent import BROKER_UNREACHABLE

pytestmark = pytest.mark.integration


def _dispatchers(rows: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(name for name, row in rows.items() if row.get("role") == "dispatcher")


def test_sigterm_says_stopped_at_once_and_one_node_says_dispatcher(tmp_path: Path) -> None:
    require_redis()
    # A 10 s heartbeat threshold: "at once" must be much sooner than a silence would show.
    site = SiteUnderTest(ha_settings(tmp_path / "site", offline_after=10.0), nodes=3, node_concurrency=1,
                         flower=False, startup_timeout=60)
    with running_site(site), site.client() as client, site_state(site) as state:
        first = wait_for(lambda: dispatcher_of(state), timeout=20, what="a dispatcher")
        wait_for(lambda: _dispatchers(node_rows(client, site)) == [first], timeout=10,
                 what="the cloud to show the dispatcher")
        worker = next(n for n in site.node_names if n != first)

        # When a worker node gets SIGTERM, then the cloud shows it Offline "stopped" at once.
        stopping = threading.Thread(target=site.stop_node, args=(worker,), daemon=True)
        sent = time.monotonic()
        stopping.start()
        row = wait_for(lambda: (r := node_rows(client, site)[worker])["status"] == "Offline" and r,
                       timeout=site.settings.offline_after - 2, what=f"{worker} Offline after SIGTERM")
        figure(site, "sigterm_to_offline_stopped_s", time.monotonic() - sent)
        assert row["reasons"] == [STOPPED] and row["role"] == "worker"
        stopping.join(30)
        assert not stopping.is_alive()
        gateway = client.gateway(site.gateway)
        assert gateway["status"] == "Limited" and f"{worker}: Offline (stopped)" in gateway["reasons"]

        # When the dispatcher is SIGKILLed, then no look shows two dispatchers: after the
        # failover the lease holder does, and the dead one shows worker until it is Offline.
        killed = time.monotonic()
        site.kill_node(first)
        seen: list[list[str]] = []

        def successor_shown() -> bool:
            shown = _dispatchers(node_rows(client, site))
            seen.append(shown)
            successor = successor_of(state, first)
            return bool(successor) and shown == [successor]

        wait_for(successor_shown, timeout=20, what="the cloud to show the new dispatcher")
        figure(site, "dispatcher_kill_to_one_new_dispatcher_row_s", time.monotonic() - killed)
        successor = successor_of(state, first)

        def dead_offline() -> bool:  # the window where the dead one used to say dispatcher too
            rows = node_rows(client, site)
            seen.append(_dispatchers(rows))
            assert rows[first]["role"] == "worker", rows[first]
            return rows[first]["status"] == "Offline"

        wait_for(dead_offline, timeout=site.settings.offline_after + 10, what=f"{first} Offline")
        assert all(len(shown) <= 1 for shown in seen), seen
        assert _dispatchers(node_rows(client, site)) == [successor]


def test_limited_nodes_still_move_data_and_a_short_redis_outage_is_not_offline(tmp_path: Path) -> None:
    require_redis()
    site = SiteUnderTest(ha_settings(tmp_path / "site", store_check_interval=1.0), nodes=2,
                         node_concurrency=2, flower=False, startup_timeout=60)
    with running_site(site), site.client() as client:
        # Given a store that a pipeline names but no run uses, unreachable from every node.
        client.add_store({"name": "away", "type": "file", "location": str(tmp_path / "not-mounted")})
        client.create_pipeline({"name": "unused", "gateway": site.gateway, "activities": [{
            "name": "never", "source": {"store": "away", "path": ""},
            "sink": {"store": "away", "path": "x"}}]})
        wait_for(lambda: all_nodes(client, site, lambda r: r["status"] == "Limited"
                                   and r["stores_unreachable"] == ["away"]),
                 timeout=20, what="every node Limited: store 'away' unreachable")
        gateway = client.gateway(site.gateway)
        assert gateway["status"] == "Limited", gateway
        assert all("away" in reason for reason in gateway["reasons"]), gateway["reasons"]

        # Then data still moves.
        copy = throttled_copy(client, site, tmp_path, files=8, bandwidth=0)
        run_id = client.run_pipeline(copy.pipeline)["id"]
        wait_for(lambda: client.run(run_id)["status"] in ("Succeeded", "Failed"), timeout=60,
                 what="the run to end")
        assert_copied_exactly(client, run_id, copy)

        # When Redis stops for a few seconds, then the gateway is Limited (broker
        # unreachable), never Offline, and every node comes back by itself.
        statuses: list[str] = []

        def gateway_status() -> dict[str, Any]:
            body = client.gateway(site.gateway)
            statuses.append(body["status"])
            return body

        site.stop_redis()
        try:
            wait_for(lambda: gateway_status() and all_nodes(client, site, limited_by(BROKER_UNREACHABLE)),
                     timeout=20, what="every node Limited: broker unreachable")
            holds_for(gateway_status, seconds=3)  # a few heartbeats with the broker away
            during = gateway_status()
            assert during["status"] == "Limited", during
            assert any(BROKER_UNREACHABLE in reason for reason in during["reasons"]), during["reasons"]
        finally:
            site.start_redis()
        wait_for(lambda: gateway_status() and all_nodes(client, site, node_ready), timeout=60,
                 what="every node ready again")
        assert "Offline" not in statuses, statuses
        assert gateway_status()["status"] == "Limited"  # the unused store is still away
