"""What a run costs the cloud in requests: at most about one per activity (issue 11).

A real site (Redis, cloud with its debug counters, ``DMG_CLOUD_METRICS``; one node)
runs N activities of one empty file each. The plans travel in the dispatcher's report
batches with the placements, and the workers' reports in theirs: no request is made
per plan or per shard. What the test itself asks (the run's status) is not counted.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dmg.site.state import SiteState
from tests.ha.nodekit import site_state
from tests.ha.sitekit import ha_settings, require_redis, running_site, wait_for

ACTIVITIES = 60
#: Requests that do not grow with the activities: claims, cancel checks, heartbeats
#: (a beat a second per node), credentials and store checks, for a run of a few seconds.
FIXED = 20
OWN_ROUTES = ("GET /runs/{run_id}", "GET /runs/{run_id}/wait")


def _requests(client: Any) -> dict[str, int]:
    return dict(client.request("GET", "/debug/metrics")["requests_by_route"])


def test_a_run_of_n_activities_costs_the_cloud_about_n_requests(tmp_path: Path) -> None:
    from dmg.embedded.site import EmbeddedSite

    require_redis()
    settings = ha_settings(tmp_path / "data", cloud_metrics=True, heartbeat_interval=1.0,
                           offline_after=5.0)
    source, sink = tmp_path / "source", tmp_path / "sink"
    source.mkdir()
    sink.mkdir()
    for i in range(ACTIVITIES):
        (source / f"f{i:03d}").touch()
    site = EmbeddedSite(settings, nodes=1, flower=False, node_concurrency=4, startup_timeout=60)
    with running_site(site), site.client() as client, site_state(site) as state:
        # Given a site that is up, and a pipeline of N activities
        client.add_store({"name": "src", "type": "file", "location": str(source)})
        client.add_store({"name": "dst", "type": "file", "location": str(sink)})
        client.create_pipeline({"name": "many", "gateway": site.gateway, "activities": [
            {"name": f"a{i}", "source": {"store": "src", "path": f"f{i:03d}"},
             "sink": {"store": "dst", "path": f"out{i:03d}"}} for i in range(ACTIVITIES)]})
        before = _requests(client)
        started = time.monotonic()

        # When it runs to the end
        run = client.run_pipeline("many")
        done = wait_for(lambda: (r := client.run(run["id"]))["status"] in ("Succeeded", "Failed") and r,
                        timeout=90, what="the run ended", interval=0.2)
        took = time.monotonic() - started
        assert done["status"] == "Succeeded", done
        # Reports still travelling when the run ended count too: wait until every report list
        # is empty (a report leaves its list only once the cloud answered, and counted, it).
        wait_for(lambda: _delivered(state, site.node_names), timeout=20, what="no report in flight")
        after = _requests(client)

    # Then the cloud got about one request per activity, none of them a plan of its own
    spent = {route: n - before.get(route, 0) for route, n in after.items() if n > before.get(route, 0)}
    counted = sum(n for route, n in spent.items() if route not in OWN_ROUTES)
    print(f"FIGURE requests_per_activity {counted / ACTIVITIES:.2f} ({took:.1f} s) {spent}")
    assert "POST /activity-runs/{activity_run_id}/shards" not in spent, spent
    # Cancel notices come in the claims' answers: the dispatcher asks for them at most once
    # a second, and only when no claim answered lately.
    assert spent.get("GET /dispatch/cancelled", 0) <= 1 + took, spent
    assert counted <= ACTIVITIES + FIXED + 2 * took, spent
    assert len(list(sink.iterdir())) == ACTIVITIES


def _delivered(state: SiteState, nodes: list[str]) -> bool:
    """True once no report waits in the site: every node's outbox and held reports, and the
    dispatcher's list (plans, placements), are empty."""
    lists = [state.keys.placements, *(state.keys.outbox(n) for n in nodes)]
    return (all(state.redis.llen(key) == 0 for key in lists)
            and all(state.redis.hlen(state.keys.outbox_held(n)) == 0 for n in nodes))
