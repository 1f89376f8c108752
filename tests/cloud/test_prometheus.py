"""``GET /metrics`` of a real cloud (README: Metrics): the figures follow the reports the
cloud gets, exactly; who may scrape.

Given a real cloud and a gateway whose nodes speak the node API (heartbeats, the
dispatcher's claim and plan, the workers' reports); when a run goes through; then the
families show it: node status and jobs, runs by status, bytes and files moved, attempts,
the dispatch latency histogram. A real site moving real data: tests/ha/test_metrics_site.py.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.cloud.conftest import Cloud, make_pipeline, make_site, place

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(cloud: Cloud, *, token: str | None = None) -> Samples:
    token = cloud.process.api_token if token is None else token
    response = httpx.get(cloud.url + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def parse(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels`` (0 when absent: a gateway with no attempt yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_the_figures_follow_a_run(cloud: Cloud) -> None:
    with cloud.user() as user:
        site = make_site(user, nodes=("d1", "w1"))
        pipeline = make_pipeline(user, site.gateway)
    gw = site.gateway
    before = scrape(cloud)
    assert value(before, "dmg_node_status", gateway=gw, node="w1", status="Offline") == 1
    assert value(before, "dmg_gateway_status", gateway=gw, status="Offline") == 1

    # Given both nodes beat, w1 running 2 shards of 4.
    with cloud.node(site.tokens["w1"]) as w1, cloud.node(site.tokens["d1"]) as d1:
        d1.heartbeat({"running": 0, "limit": 2, "cpu_percent": 12.5, "memory_available": 1 << 30})
        w1.heartbeat({"running": 2, "limit": 4, "network_in": 1000.0, "network_out": 250.0})
        beats = scrape(cloud)
        assert value(beats, "dmg_node_status", gateway=gw, node="w1", status="Online") == 1
        assert value(beats, "dmg_node_status", gateway=gw, node="w1", status="Offline") == 0
        assert value(beats, "dmg_node_jobs_running", gateway=gw, node="w1") == 2
        assert value(beats, "dmg_node_jobs_limit", gateway=gw, node="w1") == 4
        assert value(beats, "dmg_node_cpu_percent", gateway=gw, node="d1") == 12.5
        assert value(beats, "dmg_node_memory_available_bytes", gateway=gw, node="d1") == 1 << 30
        assert value(beats, "dmg_node_network_receive_bytes_per_second", gateway=gw, node="w1") == 1000
        assert value(beats, "dmg_node_network_transmit_bytes_per_second", gateway=gw, node="w1") == 250
        assert value(beats, "dmg_node_credential_status", gateway=gw, node="w1", state="none") == 1
        assert value(beats, "dmg_gateway_status", gateway=gw, status="Online") == 1

        # When a run is submitted, claimed, planned in one shard, placed on w1 and copied there.
        with cloud.user() as user:
            user.run_pipeline(pipeline)
        queued = scrape(cloud)
        assert value(queued, "dmg_gateway_activity_runs", gateway=gw, status="Queued") == 1
        [activity] = d1.claim_activity_runs(epoch=1, wait=0)
        shard = f"{activity['id']}-0"
        d1.plan_shards(activity["id"], epoch=1,
                       shards=[{"id": shard, "index": 0, "files": 3, "bytes": 12345}])
        place(d1, shard, "w1", epoch=1)
        w1.report_shard(shard, {"attempt": 1, "status": "running", "files": 0, "bytes": 0})
        w1.report_shard(shard, {"attempt": 1, "status": "succeeded", "files": 3, "bytes": 12345,
                                "files_total": 3, "bytes_total": 12345})
    after = scrape(cloud)

    # Then the run moved from Queued to Succeeded, 12345 bytes in 3 files, one attempt.
    assert value(after, "dmg_gateway_activity_runs", gateway=gw, status="Queued") == 0
    assert value(after, "dmg_gateway_activity_runs", gateway=gw, status="Succeeded") == 1
    assert value(after, "dmg_gateway_moved_bytes_total", gateway=gw) == 12345
    assert value(after, "dmg_gateway_moved_files_total", gateway=gw) == 3
    assert value(after, "dmg_gateway_shard_attempts_total", gateway=gw, outcome="succeeded") == 1
    assert value(after, "dmg_gateway_dispatch_latency_seconds_count", gateway=gw) == 1
    assert value(after, "dmg_gateway_dispatch_latency_seconds_bucket", gateway=gw, le="+Inf") == 1
    assert value(after, "dmg_gateway_claim_latency_seconds_count", gateway=gw) == 1
    assert value(after, "dmg_gateway_failovers_total", gateway=gw) == 0
    info = [labels for (name, labels), _v in after.items()
            if name == "dmg_gateway_info" and ("gateway", gw) in labels]
    assert dict(info[0])["dispatcher"] == "d1", info


def test_only_the_api_token_scrapes(cloud: Cloud) -> None:
    with cloud.user() as user:
        site = make_site(user, nodes=("n1",))
    url = cloud.url + "/metrics"
    assert httpx.get(url, timeout=30).status_code == 401
    node = httpx.get(url, headers={"Authorization": f"Bearer {site.tokens['n1']}"}, timeout=30)
    assert node.status_code == 403 and node.json()["error"] == "permission_denied"
    assert "dmg_node" not in node.text


def test_a_public_metrics_route_needs_no_token(start_cloud: Callable[..., Cloud]) -> None:
    server = start_cloud(cloud_metrics_public=True)
    response = httpx.get(server.url + "/metrics", timeout=30)
    assert response.status_code == 200
    assert "dmg_gateway_activity_runs" in response.text
    # The rest of the API still wants its token.
    assert httpx.get(server.url + "/api/v1/gateways", timeout=30).status_code == 401
