"""Bad input gets a 4xx JSON error ``{error, message, hint}``, never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.cloud.conftest import Cloud, make_site, unique


@pytest.fixture
def http(cloud: Cloud) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cloud.url + "/api/v1",
                      headers={"Authorization": f"Bearer {cloud.process.api_token}"}) as client:
        yield client


def _error(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message", "hint"}
    return body


@pytest.mark.parametrize("path", ["/gateways", "/stores", "/pipelines", "/nodes/register"])
def test_malformed_json_is_400(http: httpx.Client, path: str) -> None:
    response = http.post(path, content=b'{"name": ', headers={"Content-Type": "application/json"})
    body = _error(response, 400)
    assert body["error"] == "bad_input" and "JSON" in body["message"]


@pytest.mark.parametrize("payload", [[1, 2], "text", 42, None])
def test_a_body_that_is_not_an_object_is_400(http: httpx.Client, payload: object) -> None:
    body = _error(http.post("/gateways", json=payload), 400)
    assert body["error"] == "bad_input"


def test_missing_and_invalid_fields_are_named(http: httpx.Client) -> None:
    assert "name" in _error(http.post("/gateways", json={}), 400)["message"]
    assert "name" in _error(http.post("/gateways", json={"name": 5}), 400)["message"]
    assert "limit" in _error(http.get("/runs", params={"limit": 0}), 400)["message"]
    assert "limit" in _error(http.get("/runs", params={"limit": "many"}), 400)["message"]


def test_unknown_paths_and_methods_answer_json(http: httpx.Client, cloud: Cloud) -> None:
    assert _error(http.get("/no/such/thing"), 404)["error"] == "not_found"
    assert _error(http.put("/gateways"), 405)["error"] == "bad_input"
    assert _error(http.get(f"/runs/{unique('absent')}"), 404)["error"] == "not_found"
    assert _error(http.post(f"/pipelines/{unique('absent')}/runs"), 404)["error"] == "not_found"


def test_node_routes_refuse_bad_bodies(http: httpx.Client, cloud: Cloud) -> None:
    with cloud.user() as user:
        site = make_site(user)
    node = {"Authorization": f"Bearer {site.tokens['n1']}"}
    assert "wait" in _error(http.post("/dispatch/claim", json={"epoch": 1, "wait": -1}, headers=node),
                            400)["message"]
    assert "epoch" in _error(http.post("/dispatch/claim", json={"wait": 0}, headers=node), 400)["message"]
    body = _error(http.post("/shards/x/report", json={"attempt": 1, "status": "exploded"}, headers=node), 400)
    assert "status" in body["message"]
    assert _error(http.post("/shards/x/report", json={"attempt": 1, "status": "running"}, headers=node),
                  404)["error"] == "not_found"
    body = _error(http.post("/activity-runs/x/shards", json={"epoch": 1, "shards": [{"index": 0}]},
                            headers=node), 400)
    assert "shards[0].id" in body["message"]
    assert _error(http.post("/nodes/heartbeat", content=b"{", headers={**node, "Content-Type":
                                                                        "application/json"}), 400)
    assert _error(http.post("/nodes/heartbeat", json={}), 403)["error"] == "permission_denied"  # user token
    assert _error(httpx.post(cloud.url + "/api/v1/nodes/heartbeat", json={}), 401)["error"] == "unauthorized"


def test_huge_numbers_do_not_crash(http: httpx.Client, cloud: Cloud) -> None:
    with cloud.user() as user:
        site = make_site(user)
    node = {"Authorization": f"Bearer {site.tokens['n1']}"}
    response = http.post("/nodes/heartbeat", json={"running": 10**30}, headers=node)
    assert response.status_code < 500, response.text
    response = http.post("/dispatch/claim", json={"epoch": 10**30, "wait": 0}, headers=node)
    assert response.status_code < 500, response.text


def test_values_no_database_can_store_are_refused(http: httpx.Client) -> None:
    nul = _error(http.post("/stores", json={"name": unique("s"), "type": "file", "location": "/a\x00b"}), 400)
    assert "location" in nul["message"] and "NUL" in nul["message"]
    raw = b'{"name": "nan-store", "type": "file", "location": "/x", "options": {"ratio": NaN}}'
    nan = _error(http.post("/stores", content=raw, headers={"Content-Type": "application/json"}), 400)
    assert "options.ratio" in nan["message"]
