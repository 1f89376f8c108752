"""POST /nodes/reports: a node's reports and file results in one request, one transaction.

Each item is checked as the single routes check it (the token's node, the attempt's
node, the dispatcher for placements); a batch sent twice changes nothing and counts
nothing twice; a removed node's token stops working at once although the cloud
remembers tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from dmg.errors import Unauthorized
from tests.cloud.conftest import Cloud, make_pipeline, make_site


def _planned(cloud: Cloud, *, shards: int = 2) -> tuple[object, str, list[str]]:
    """A gateway (d dispatches, w works, x is rogue) with ``shards`` planned shards of one
    activity run; -> (site, run id, shard ids)."""
    with cloud.user() as user:
        site = make_site(user, nodes=("d", "w", "x"))
        run = user.run_pipeline(make_pipeline(user, site.gateway))
    with cloud.node(site.tokens["d"]) as d:
        [activity] = d.claim_activity_runs(epoch=1, wait=0)
        ids = [f"{activity['id']}-{i}" for i in range(shards)]
        d.plan_shards(activity["id"], epoch=1, shards=[{"id": s, "index": i, "files": 2}
                                                        for i, s in enumerate(ids)])
    return site, run["id"], ids


def _placed(shard_id: str, node: str) -> dict[str, object]:
    return {"shard_id": shard_id, "report": {"attempt": 1, "status": "placed", "node": node, "epoch": 1}}


def _files(*names: str) -> list[dict[str, object]]:
    return [{"path": n, "source": n, "bytes": 5, "status": "copied", "checksum": "c"} for n in names]


def test_a_batch_places_runs_and_finishes_shards_with_their_files_in_one_request(cloud: Cloud) -> None:
    site, run_id, (s0, s1) = _planned(cloud)
    tokens = site.tokens  # type: ignore[attr-defined]
    with cloud.node(tokens["d"]) as d, cloud.node(tokens["w"]) as w, cloud.user() as user:
        placed = d.report_batch([{"shard_id": s, "report": {"attempt": 1, "status": "placed", "node": "w",
                                                            "epoch": 1}} for s in (s0, s1)])
        assert placed["applied"] == 2 and all(r["ok"] for r in placed["results"])
        final = {"attempt": 1, "status": "succeeded", "files": 2, "bytes": 10, "started_at": 1.0}
        items = [{"shard_id": s, "files": {"attempt": 1, "files": _files(f"{s}/a", f"{s}/b")},
                  "report": final} for s in (s0, s1)]

        first = w.report_batch(items)
        again = w.report_batch(items)  # the answer was lost: the node sends it all again

        assert first["applied"] == again["applied"] == 2 and first["retry"] is None
        shown = user.run(run_id)
        assert shown["status"] == "Succeeded" and shown["files"] == 4
        report = user.run_report(run_id)
        assert sorted(r["path"] for r in report) == sorted(f"{s}/{n}" for s in (s0, s1) for n in "ab")
        assert {r["node"] for r in report} == {"w"}


def test_each_item_is_checked_against_the_token_and_a_refused_one_changes_nothing(cloud: Cloud) -> None:
    site, run_id, (s0, s1) = _planned(cloud)
    tokens = site.tokens  # type: ignore[attr-defined]
    with cloud.node(tokens["d"]) as d, cloud.node(tokens["x"]) as x, cloud.user() as user:
        d.report_batch([_placed(s0, "w"), _placed(s1, "x")])
        spoof = {"attempt": 1, "status": "succeeded", "files": 99}
        answer = x.report_batch([
            {"shard_id": s0, "report": spoof, "files": {"attempt": 1, "files": _files("forged")}},  # w's
            {"shard_id": s1, "report": {**spoof, "node": "w"}},  # its own, naming another node
            {"shard_id": "nope", "report": spoof},  # no such shard
            {"shard_id": s1, "report": {"attempt": 1, "status": "running"}},  # its own: accepted
        ])
        assert answer["applied"] == 4
        assert [r.get("error") for r in answer["results"]] == [
            "permission_denied", "permission_denied", "not_found", None]
        assert answer["results"][3]["ok"] is True
        # A placement from a node that is not the dispatcher is refused too.
        placed = x.report_batch([{"shard_id": s0, "report": {"attempt": 2, "status": "placed", "node": "x"}}])
        assert placed["results"][0]["error"] == "permission_denied"
        shown = user.run(run_id)
        assert shown["status"] == "InProgress" and shown["files"] == 0
        assert user.run_report(run_id) == []
        states = {(a["shard_id"], a["node"], a["status"]) for a in user.run_attempts(run_id)}
        assert states == {(s0, "w", "placed"), (s1, "x", "running")}


def test_a_report_before_its_placement_waits_alone_with_its_shards_later_reports(cloud: Cloud) -> None:
    site, run_id, (s0, s1) = _planned(cloud)
    tokens = site.tokens  # type: ignore[attr-defined]
    with cloud.node(tokens["d"]) as d, cloud.node(tokens["w"]) as w, cloud.user() as user:
        d.report_batch([_placed(s0, "w")])
        done = {"attempt": 1, "status": "succeeded", "files": 2}
        answer = w.report_batch([{"shard_id": s1, "report": {"attempt": 1, "status": "running"}},
                                 {"shard_id": s0, "report": done},
                                 {"shard_id": s1, "report": done}])
        assert answer["applied"] == 3 and answer["retry"]["error"] == "retryable"
        assert [(r["shard_id"], r["ok"], r.get("retry")) for r in answer["results"]] == [
            (s1, False, True), (s0, True, None), (s1, False, True)]
        shards = user.run(run_id)["activity_runs"][0]["shards"]
        assert [s["status"] for s in shards] == ["succeeded", "planned"]
        # A placement from a dispatcher the cloud no longer takes stays with the site.
        stale = d.report_batch([{"shard_id": s1, "report": {"attempt": 1, "status": "placed", "node": "w",
                                                             "epoch": 0}}])
        assert stale["results"][0].get("not_dispatcher") is True


def test_a_batch_that_does_not_fit_is_one_clear_400(cloud: Cloud) -> None:
    site, _run_id, (s0, _s1) = _planned(cloud)
    headers = {"Authorization": f"Bearer {site.tokens['w']}"}  # type: ignore[attr-defined]
    bodies: list[dict[str, Any]] = [
        {"items": []}, {"items": [{"shard_id": s0}]}, {"items": "x"},
        {"items": [{"shard_id": s0, "report": {"attempt": -1, "status": "done"}}]}]
    for body in bodies:
        answer = httpx.post(f"{cloud.url}/api/v1/nodes/reports", json=body, headers=headers)
        assert answer.status_code == 400 and answer.json()["error"] == "bad_input", body
        assert "Traceback" not in answer.text and "\n" not in answer.json()["message"]
    user_token = {"Authorization": f"Bearer {cloud.process.api_token}"}
    answer = httpx.post(f"{cloud.url}/api/v1/nodes/reports", json={"items": []}, headers=user_token)
    assert answer.status_code == 403


def test_a_removed_nodes_token_stops_working_at_once(cloud: Cloud) -> None:
    site, _run_id, (s0, _s1) = _planned(cloud)
    tokens = site.tokens  # type: ignore[attr-defined]
    with cloud.node(tokens["x"]) as x, cloud.user() as user:
        for _ in range(3):  # known, so remembered by the cloud
            x.report_batch([{"shard_id": s0, "report": {"attempt": 1, "status": "running"}}])
        user.remove_node(site.gateway, "x")  # type: ignore[attr-defined]
        with pytest.raises(Unauthorized):
            x.report_batch([{"shard_id": s0, "report": {"attempt": 1, "status": "running"}}])
        with pytest.raises(Unauthorized):
            x.heartbeat({"running": 0, "limit": 1})


def test_metrics_only_when_enabled(start_cloud: Callable[..., Cloud], cloud: Cloud) -> None:
    headers = {"Authorization": f"Bearer {cloud.process.api_token}"}
    assert httpx.get(f"{cloud.url}/api/v1/debug/metrics", headers=headers).status_code == 404
    counted = start_cloud(cloud_metrics=True)
    headers = {"Authorization": f"Bearer {counted.process.api_token}"}
    before = httpx.get(f"{counted.url}/api/v1/debug/metrics", headers=headers).json()
    with counted.user() as user:
        user.create_gateway("g1")
    after = httpx.get(f"{counted.url}/api/v1/debug/metrics", headers=headers).json()
    assert after["requests_by_route"].get("POST /gateways", 0) == 1
    assert after["statements"] > before["statements"] and after["transactions"] > before["transactions"]
    assert httpx.get(f"{counted.url}/api/v1/debug/metrics").status_code == 401
