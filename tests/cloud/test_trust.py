"""A node is trusted for its own work only: a forged epoch does not stick, a report of
work placed elsewhere is refused, only the dispatcher reports placements and gone nodes.

Given a real cloud (its dispatcher lease TTL shortened to 1 s so expiry is seen fast)
and a gateway whose node ``d`` dispatches while node ``x`` holds a stolen or rogue token;
when ``x`` sends what the issue tried; then the gateway's work goes on within one lease
period and nothing ``x`` said is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from dmg.errors import PermissionDenied, Retryable, StaleAttempt
from tests.cloud.conftest import Cloud, make_pipeline, make_site, place
from tests.waiting import wait_for

FORGED = 4611686018427387904  # 2**62, the epoch
TTL = 1.0


@pytest.fixture
def short_lease(start_cloud: Callable[..., Cloud]) -> Cloud:
    return start_cloud(lease_ttl=TTL)


def test_a_forged_epoch_holds_the_gateway_one_lease_period_at_most(short_lease: Cloud) -> None:
    cloud = short_lease
    with cloud.user() as user:
        site = make_site(user, nodes=("d", "x"))
        pipeline = make_pipeline(user, site.gateway)
        first = user.run_pipeline(pipeline)
    with cloud.node(site.tokens["d"]) as d, cloud.node(site.tokens["x"]) as x:
        # x forges the epoch while nobody dispatches: it is the dispatcher, like any node could be.
        [grabbed] = x.claim_activity_runs(epoch=FORGED, wait=0)
        assert d.claim_activity_runs(epoch=5, wait=0) == []  # waits; never 409 for good
        # x stops calling: within one TTL the real dispatcher takes over with a cloud epoch of
        # its own and takes back what x claimed and never planned.
        began = time.monotonic()
        [taken] = wait_for(lambda: d.claim_activity_runs(epoch=5, wait=0), timeout=10,
                           what="the real dispatcher to claim after the forged lease expired")
        assert time.monotonic() - began < TTL + 1.5
        assert taken["id"] == grabbed["id"] and taken["run_id"] == first["id"]
        d.plan_shards(taken["id"], epoch=5, shards=[])
        # x forging again while d dispatches changes nothing: its claim waits, its plans are refused.
        with cloud.user() as user:
            second = user.run_pipeline(pipeline)
            assert x.claim_activity_runs(epoch=FORGED, wait=0) == []
            with pytest.raises(Retryable):
                x.plan_shards(second["activity_runs"][0]["id"], epoch=FORGED, shards=[])
            [mine] = d.claim_activity_runs(epoch=5, wait=0)
            d.plan_shards(mine["id"], epoch=5, shards=[])
            assert user.run(first["id"])["status"] == user.run(second["id"])["status"] == "Succeeded"
            assert user.gateway(site.gateway)["dispatcher"] == "d"


def test_a_removed_forger_frees_the_gateway_at_once(short_lease: Cloud) -> None:
    cloud = short_lease
    with cloud.user() as user:
        site = make_site(user, nodes=("d", "x"))
        run = user.run_pipeline(make_pipeline(user, site.gateway))
        with cloud.node(site.tokens["x"]) as x:
            x.claim_activity_runs(epoch=FORGED, wait=0)
            user.remove_node(site.gateway, "x")
        with cloud.node(site.tokens["d"]) as d:
            [taken] = d.claim_activity_runs(epoch=1, wait=0)
            d.plan_shards(taken["id"], epoch=1, shards=[])
        assert user.run(run["id"])["status"] == "Succeeded"


def _one_placed_shard(cloud: Cloud) -> tuple[object, str, str]:
    """A gateway (d dispatches, w works, x is rogue) with one shard placed on w."""
    with cloud.user() as user:
        site = make_site(user, nodes=("d", "w", "x"))
        run = user.run_pipeline(make_pipeline(user, site.gateway))
    with cloud.node(site.tokens["d"]) as d:
        [activity] = d.claim_activity_runs(epoch=1, wait=0)
        shard_id = f"{activity['id']}-0"
        d.plan_shards(activity["id"], epoch=1, shards=[{"id": shard_id, "index": 0, "files": 3}])
        place(d, shard_id, "w", epoch=1)
    return site, run["id"], shard_id


def test_a_spoofed_report_is_refused_and_changes_nothing(cloud: Cloud) -> None:
    site, run_id, shard_id = _one_placed_shard(cloud)
    spoof = {"attempt": 1, "status": "succeeded", "node": "spoofed", "files": 999}
    headers = {"Authorization": f"Bearer {site.tokens['x']}"}  # type: ignore[attr-defined]

    answer = httpx.post(f"{cloud.url}/api/v1/shards/{shard_id}/report", json=spoof, headers=headers)

    assert answer.status_code == 403 and answer.json()["error"] == "permission_denied"
    tokens = site.tokens  # type: ignore[attr-defined]
    with cloud.node(tokens["x"]) as x, cloud.node(tokens["w"]) as w, cloud.user() as user:
        with pytest.raises(PermissionDenied, match="not placed on node 'x'"):
            x.report_shard(shard_id, {"attempt": 1, "status": "succeeded", "files": 999})
        with pytest.raises(PermissionDenied):
            x.report_files(shard_id, attempt=1, node=None, files=[{"path": "a", "status": "copied"}])
        with pytest.raises(PermissionDenied, match="cannot report for node 'spoofed'"):
            w.report_shard(shard_id, spoof)  # the placed node, naming another: refused too
        with pytest.raises(PermissionDenied, match="not the gateway's dispatcher"):
            place(x, shard_id, "x", attempt=2)  # a placement without an epoch, not the dispatcher's
        with pytest.raises(StaleAttempt):
            place(x, shard_id, "x", attempt=2, epoch=1)  # an epoch, not the dispatcher's
        shown = user.run(run_id)
        assert shown["status"] == "InProgress" and shown["files"] == 0
        assert [(a["node"], a["status"]) for a in user.run_attempts(run_id)] == [("w", "placed")]
        # The placed node's own report counts, under the token's name.
        w.report_shard(shard_id, {"attempt": 1, "status": "succeeded", "files": 3})
        shown = user.run(run_id)
        assert shown["status"] == "Succeeded" and shown["files"] == 3
        assert shown["activity_runs"][0]["shards"][0]["node"] == "w"


def test_only_the_dispatcher_marks_nodes_gone_or_shows_as_dispatcher(cloud: Cloud) -> None:
    site, _run_id, _shard = _one_placed_shard(cloud)
    tokens = site.tokens  # type: ignore[attr-defined]
    gateway = site.gateway  # type: ignore[attr-defined]
    with cloud.node(tokens["x"]) as x, cloud.node(tokens["d"]) as d, cloud.user() as user:
        d.heartbeat({"role": "dispatcher", "epoch": 1})
        for name in ("w", "x"):
            with cloud.node(tokens[name]) as node:
                node.heartbeat({"running": 0})
        x.heartbeat({"role": "dispatcher", "epoch": 2**31 - 1})  # its word only: d holds the lease
        roles = {n["name"]: n["role"] for n in user.list_nodes(gateway)}
        assert roles["d"] == "dispatcher" and roles["x"] == "worker"
        with pytest.raises(StaleAttempt):
            x.report_nodes_gone(["d", "w"], epoch=1)
        with pytest.raises(Retryable):  # a newer epoch while d's lease runs: refused as well
            x.report_nodes_gone(["d", "w"], epoch=FORGED)
        statuses = {n["name"]: n["status"] for n in user.list_nodes(gateway)}
        assert statuses["d"] != "Offline" and statuses["w"] != "Offline"
        d.report_nodes_gone(["x"], epoch=1)
        statuses = {n["name"]: n["status"] for n in user.list_nodes(gateway)}
        assert statuses["x"] == "Offline" and statuses["w"] != "Offline"
