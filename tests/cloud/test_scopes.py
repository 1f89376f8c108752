"""Every route of the OpenAPI document, with every kind of token: each caller gets only
what its token allows, denials are 401/403 JSON errors, and nothing is ever a 5xx.

Given a real cloud with gateways A (nodes a1 = its dispatcher, a2) and B (node b1), a
removed node's token, a gateway key and garbage; when each caller calls each route;
then the status class is the one of the table below, and a node of B asking about A's
run, shard or activity run gets exactly the answer for one that does not exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI

from dmg.cloud.api.auth import check_scopes, require_user
from tests.cloud.conftest import Cloud, make_pipeline, make_site, place, unique

CALLERS = ("none", "garbage", "revoked node", "user", "node of A", "node of B", "gateway key")
SCOPES = {"user", "node", "gateway key", "public"}


@dataclass
class World:
    gateway_a: str
    gateway_b: str
    tokens: dict[str, str]
    key: str
    ids: dict[str, str]


@pytest.fixture(scope="module")
def world(cloud: Cloud) -> World:
    with cloud.user() as user:
        a = make_site(user, nodes=("a1", "a2"))
        b = make_site(user, nodes=("b1",))
        gone = make_site(user, nodes=("g1",))
        user.remove_node(gone.gateway, "g1")
        run = user.run_pipeline(make_pipeline(user, a.gateway))
    with cloud.node(a.tokens["a1"]) as a1:
        [activity] = a1.claim_activity_runs(epoch=1, wait=0)
        shard_id = f"{activity['id']}-0"
        a1.plan_shards(activity["id"], epoch=1, shards=[{"id": shard_id, "index": 0, "files": 1}])
        place(a1, shard_id, "a1")
    tokens = {"none": "", "garbage": "dmgn_" + "x" * 43, "revoked node": gone.tokens["g1"],
              "user": cloud.process.api_token, "node of A": a.tokens["a1"], "node of B": b.tokens["b1"],
              "gateway key": a.keys["key2"]}
    return World(gateway_a=a.gateway, gateway_b=b.gateway, tokens=tokens, key=a.keys["key2"],
                 ids={"run_id": run["id"], "shard_id": shard_id, "activity_run_id": activity["id"],
                      "name": a.gateway, "node": unique("absent"), "store": unique("absent")})


def _body(path: str, method: str, caller: str, world: World) -> dict[str, Any] | None:
    if method == "get" or method == "delete":
        return None
    bodies: dict[str, dict[str, Any]] = {
        "/api/v1/gateways": {"name": unique("gw")},
        "/api/v1/gateways/{name}/keys/regenerate": {"key": "key1"},
        "/api/v1/stores": {"name": unique("st"), "type": "file", "location": "/data"},
        "/api/v1/pipelines": {"name": unique("pl"), "gateway": world.gateway_a, "activities": []},
        "/api/v1/nodes/register": {"key": world.key if caller == "gateway key" else "dmgk_wrong",
                                   "name": unique("n"), "version": "1.0.0"},
        "/api/v1/nodes/heartbeat": {"running": 0},
        "/api/v1/dispatch/claim": {"epoch": 1, "wait": 0},
        "/api/v1/activity-runs/{activity_run_id}/shards": {"epoch": 1, "shards": []},
        "/api/v1/dispatch/nodes-gone": {"epoch": 1, "nodes": []},
        "/api/v1/activity-runs/{activity_run_id}/fail": {"epoch": 1, "error": "scope test"},
        "/api/v1/shards/{shard_id}/report": {"attempt": 1, "status": "running", "files": 0},
        "/api/v1/shards/{shard_id}/files": {"attempt": 1, "files": []},
    }
    return bodies.get(path, {})


def _call(cloud: Cloud, method: str, path: str, caller: str, world: World, ids: dict[str, str]
          ) -> httpx.Response:
    url = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)
    token = world.tokens[caller]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = _body(path, method, caller, world)
    return httpx.request(method.upper(), cloud.url + url, headers=headers, json=body, timeout=30)


def _expected(scope: str, caller: str) -> str:
    """``allowed`` (2xx or a 4xx other than 401/403), ``401`` or ``403``."""
    if scope == "public" or scope == "gateway key":
        return "allowed"
    if caller in ("none", "garbage", "revoked node", "gateway key"):
        return "401"
    mine = {"user": "user", "node of A": "node", "node of B": "node"}[caller]
    return "allowed" if mine == scope else "403"


@pytest.fixture(scope="module")
def operations(cloud: Cloud) -> list[tuple[str, str, str]]:
    document = httpx.get(cloud.url + "/openapi.json", timeout=30).json()
    found = [(method, path, op.get("x-dmg-scope", "")) for path, item in document["paths"].items()
             for method, op in item.items()]
    assert len(found) >= 28
    return found


def test_every_route_declares_a_scope(operations: list[tuple[str, str, str]]) -> None:
    assert {scope for _m, _p, scope in operations} <= SCOPES
    assert all(scope for _m, _p, scope in operations)
    # Prometheus' scrape route is walked too: the API token only (a node token: 403).
    assert ("get", "/metrics", "user") in operations


def test_asking_a_node_to_upgrade_is_for_users_only(operations: list[tuple[str, str, str]]) -> None:
    # node tokens cannot ask any node (their own included) to restart: only a user (or admin)
    assert ("post", "/api/v1/gateways/{name}/nodes/{node}/upgrade", "user") in operations


@pytest.mark.parametrize("caller", CALLERS)
def test_every_route_with_every_token(cloud: Cloud, world: World, operations: list[tuple[str, str, str]],
                                      caller: str) -> None:
    for method, path, scope in operations:
        response = _call(cloud, method, path, caller, world, world.ids)
        where = f"{caller}: {method.upper()} {path} -> {response.status_code} {response.text[:200]}"
        assert response.status_code < 500, where
        kind = response.headers["content-type"]
        kinds = ("application/json", "application/x-ndjson")
        if path == "/metrics" and response.status_code == 200:
            kinds = ("text/plain",)  # Prometheus' text format
        assert kind.startswith(kinds), where
        expected = _expected(scope, caller)
        if expected == "allowed":
            assert response.status_code not in (401, 403) or path == "/api/v1/nodes/register", where
        else:
            assert response.status_code == int(expected), where
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error", "message", "hint"}, where
            assert "Traceback" not in response.text, where


def test_a_node_learns_nothing_of_another_gateways_work(cloud: Cloud, world: World,
                                                        operations: list[tuple[str, str, str]]) -> None:
    absent = {**world.ids, "run_id": unique("run"), "shard_id": unique("shard"),
              "activity_run_id": unique("ar")}
    for method, path, scope in operations:
        if scope != "node" or "{" not in path:
            continue
        theirs = _call(cloud, method, path, "node of B", world, world.ids)
        nothing = _call(cloud, method, path, "node of B", world, absent)
        assert theirs.status_code == nothing.status_code == 404, (path, theirs.text)
        same = {k: v for k, v in world.ids.items() if k in path}
        text = theirs.text
        for key, value in same.items():
            text = text.replace(value, absent[key])
        assert text == nothing.text, path


def test_the_gateway_key_registers_and_nothing_else(cloud: Cloud, world: World) -> None:
    key = {"Authorization": f"Bearer {world.key}"}
    assert httpx.get(cloud.url + "/api/v1/gateways", headers=key).status_code == 401
    assert httpx.post(cloud.url + "/api/v1/nodes/heartbeat", headers=key, json={}).status_code == 401


def test_a_route_without_a_declared_scope_stops_the_app() -> None:
    app = FastAPI()
    declared = APIRouter(dependencies=[Depends(require_user)])

    @declared.get("/fine")
    def fine() -> dict[str, str]:
        return {}

    undeclared = APIRouter()

    @undeclared.get("/forgotten")
    def forgotten() -> dict[str, str]:
        return {}

    app.include_router(declared)
    assert check_scopes(app.routes) == {"GET /fine": "user"}
    app.include_router(undeclared)
    with pytest.raises(RuntimeError, match="GET /forgotten"):
        check_scopes(app.routes)



def _portal_routes() -> list[tuple[str, str]]:
    """``(METHOD, path)`` of every portal route (HTML: not in the OpenAPI document)."""
    from dmg.cloud.api import portal, portal_actions, portal_pages

    found = []
    for router in (portal.router, portal_pages.router, portal_actions.router):
        for route in router.routes:
            for method in sorted(getattr(route, "methods", ()) or ()):
                found.append((method, getattr(route, "path", "")))
    return found


def test_every_portal_route_with_every_token(cloud: Cloud, world: World) -> None:
    """Pages open to the API token only (a node's token gets the sign-in page, 401);
    every action refuses every token but the user's; nothing is ever a 5xx."""
    routes = _portal_routes()
    assert len(routes) >= 16
    absent = {**world.ids, "activity_run_id": unique("ar"), "run_id": unique("run")}
    with httpx.Client(base_url=cloud.url, timeout=30) as http:
        _walk_portal(http, world, routes, absent)


def _walk_portal(http: httpx.Client, world: World, routes: list[tuple[str, str]],
                 absent: dict[str, str]) -> None:
    for method, path in routes:
        if path in ("/login", "/logout") or path.startswith("/portal-static/"):
            continue
        for caller in CALLERS:
            token = world.tokens[caller]
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            # The user's actions go to things that do not exist: the world stays as it is.
            ids = absent if method == "POST" and caller == "user" else world.ids
            url = re.sub(r"\{(\w+)\}", lambda m, ids=ids: ids[m.group(1)], path)  # type: ignore[misc]
            response = http.request(method, url, headers=headers,
                                    data={"limit": "2", "key": "key1"} if method == "POST" else None)
            where = f"{caller}: {method} {path} -> {response.status_code} {response.text[:200]}"
            assert response.status_code < 500 and "Traceback" not in response.text, where
            if caller == "user":
                assert response.status_code not in (401, 403), where
            else:
                assert response.status_code == 401, where
                assert '<form method="post" action="/login">' in response.text, where


def test_a_portal_action_from_a_session_needs_its_csrf_token(cloud: Cloud, world: World) -> None:
    with httpx.Client(base_url=cloud.url, timeout=30) as browser:
        browser.post("/login", data={"token": cloud.process.api_token})
        for method, path in _portal_routes():
            if method != "POST" or path == "/login":
                continue
            url = re.sub(r"\{(\w+)\}", lambda m: world.ids[m.group(1)], path)
            answer = browser.post(url, data={"limit": "2", "key": "key1"})
            assert answer.status_code == 403 and "CSRF" in answer.text, path
