"""Every status kind carries its reasons in words, on every surface that shows it.

Each case below is a gateway whose node ``x`` is put in one status by real heartbeats to
a real cloud server; the test then reads that node's status and reasons from the API
(node list and gateway), the CLI (``dmg node list``, ``dmg gateway status``), the portal's
page, and the labels the metrics exporter uses (:mod:`dmg.reasons`). The gateway statuses
(Needs Registration, Online, Limited, Offline) are walked the same way.
"""

from __future__ import annotations

import html
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dmg.cloud.client import CloudClient
from dmg.fingerprint import config_hash, config_parts
from dmg.reasons import node_reason_kinds
from settings import Settings
from tests.cli.conftest import clean_environ
from tests.cloud.conftest import Cloud, make_site, unique

#: Heartbeats stay fresh for the whole walk, even on a loaded machine.
OFFLINE_AFTER = 600.0


@pytest.fixture
def cloud(start_cloud: Callable[..., Cloud]) -> Cloud:
    """A cloud of this module's tests' own, whose nodes go Offline only after 10 minutes."""
    return start_cloud(offline_after=OFFLINE_AFTER)


@pytest.fixture
def user(cloud: Cloud) -> Iterator[CloudClient]:
    with cloud.user() as client:
        yield client

DMG = Path(sys.executable).parent / "dmg"
SECRET = "s3cr3t-pw"
PROXY = f"http://proxyuser:{SECRET}@127.0.0.1:3128"


def beat(**changes: Any) -> dict[str, Any]:
    """A healthy beat of a current node (its configuration parts included)."""
    parts = config_parts(Settings(), encryption="none", proxy=changes.pop("proxy", ""))
    parts.update(changes.pop("config", {}))
    body: dict[str, Any] = {"role": "worker", "running": 0, "limit": 2, "version": "1.0.0",
                            "encryption": "none", "config": parts, "config_fingerprint": config_hash(parts),
                            "peers_seen": changes.pop("peers_seen", None)}
    body.update(changes)
    return body


@dataclass(frozen=True)
class Case:
    name: str
    status: str
    reason: str  # a part of x's reason
    kind: str  # its label (dmg.reasons)
    x_beat: dict[str, Any] | None  # None: x never beats
    others: dict[str, Any] | None = None  # the beats of a and b
    proxy: str = ""


CASES = [
    Case("never", "Offline", "never sent a heartbeat", "never_heartbeat", None),
    Case("stopped", "Offline", "stopped", "stopped", beat(stopped=True)),
    Case("pool", "Offline", "worker pool not running", "pool_not_running", beat(pool_running=False)),
    Case("upgrading", "Upgrading", "draining for an update", "upgrading", beat(draining=True)),
    Case("config", "Inactive", "heartbeat interval differs: 9.0 vs majority 2.0", "config_differs",
         beat(config={"heartbeat_interval": "9.0"})),
    Case("proxy", "Inactive", "proxy differs: none vs the gateway's http://***@127.0.0.1:3128#",
         "proxy_differs", beat(), beat(proxy=PROXY), proxy=PROXY),
    Case("partition", "Inactive", "cannot reach the other nodes through the broker", "broker_partition",
         beat(peers_seen=[]), None),
    Case("encryption", "Inactive", "encryption mode differs", "encryption_differs",
         beat(encryption="tls", config={"encryption": "tls"})),
    Case("broker", "Limited", "broker unreachable", "broker_unreachable",
         beat(problems=["broker unreachable"])),
    Case("version", "Limited", "runs 1.1.0, gateway runs 1.0.0", "version_differs",
         beat(version="1.1.0")),
]


def dmg(cloud: Cloud, *args: str) -> str:
    result = subprocess.run([str(DMG), *args], capture_output=True, text=True, timeout=60,
                            env=clean_environ(DMG_CLOUD_URL=cloud.url, DMG_API_TOKEN=cloud.process.api_token,
                                              COLUMNS="400"))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def portal(cloud: Cloud, path: str = "/") -> str:
    """A portal page as a signed-in user sees it (the gateways list, or a gateway's page)."""
    with httpx.Client(base_url=cloud.url) as browser:
        assert browser.post("/login", data={"token": cloud.process.api_token}).status_code == 303
        page = browser.get(path)
    assert page.status_code == 200
    return page.text


def _set_up(user: CloudClient, cloud: Cloud, case: Case) -> str:
    site = make_site(user, nodes=("a", "b", "x"))
    if case.proxy:
        user.set_proxy(site.gateway, case.proxy)
    others = case.others or beat()
    for name in ("a", "b"):
        with cloud.node(site.tokens[name]) as node:
            seen = {"peers_seen": [n for n in ("a", "b") if n != name]} if case.name == "partition" else {}
            node.heartbeat({**others, **seen})
    if case.x_beat is not None:
        with cloud.node(site.tokens["x"]) as x:
            x.heartbeat(case.x_beat)
    return site.gateway


def test_each_node_status_shows_its_reason_on_every_surface(cloud: Cloud, user: CloudClient) -> None:
    if not DMG.exists():
        pytest.fail(f"{DMG} is not installed (make install)")
    gateways = {case.name: _set_up(user, cloud, case) for case in CASES}
    for case in CASES:
        gateway = gateways[case.name]
        page = portal(cloud, f"/gateways/{gateway}")
        rows = {n["name"]: n for n in user.list_nodes(gateway)}
        x = rows["x"]
        assert x["status"] == case.status, (case.name, x)
        [reason] = [r for r in x["reasons"] if case.reason in r] or [f"missing in {x['reasons']}"]
        assert case.reason in reason, case.name
        assert all(rows[n]["status"] == "Online" for n in ("a", "b")), (case.name, rows)
        body = user.gateway(gateway)
        assert body["status"] == "Limited" and any(reason in r for r in body["reasons"]), (case.name, body)
        assert case.kind in node_reason_kinds(rows.values())["x"], case.name
        listed = dmg(cloud, "node", "list", "--gateway", gateway)
        assert reason in listed and case.status in listed, (case.name, listed)
        status = dmg(cloud, "gateway", "status", gateway)
        assert f"node x: {case.status}" in status and reason in status, (case.name, status)
        assert reason in html.unescape(page), case.name
        for surface in (str(rows), str(body), listed, status, page):
            assert SECRET not in surface


def _gateway_cases(user: CloudClient, cloud: Cloud) -> dict[str, tuple[str, str]]:
    """Gateway name -> (its expected status, a part of its first reason)."""
    empty = unique("gw")
    user.create_gateway(empty)
    online = make_site(user, nodes=("a",))
    with cloud.node(online.tokens["a"]) as node:
        node.heartbeat(beat())
    down = make_site(user, nodes=("a", "b"))
    for name in ("a", "b"):
        with cloud.node(down.tokens[name]) as node:
            node.heartbeat(beat(stopped=True))
    limited = make_site(user, nodes=("a", "b"))
    for name, body in (("a", beat()), ("b", beat(problems=["cloud unreachable"]))):
        with cloud.node(limited.tokens[name]) as node:
            node.heartbeat(body)
    return {empty: ("Needs Registration", "no node is registered"), online.gateway: ("Online", ""),
            down.gateway: ("Offline", "no node can do work"),
            limited.gateway: ("Limited", "b: Limited (cloud unreachable)")}


def test_each_gateway_status_shows_its_reason_on_every_surface(cloud: Cloud, user: CloudClient) -> None:
    cases = _gateway_cases(user, cloud)
    page = portal(cloud)
    listing: Callable[[], str] = lambda: dmg(cloud, "gateway", "list")  # noqa: E731
    gateway_list = listing()
    for gateway, (status, reason) in cases.items():
        body = user.gateway(gateway)
        assert body["status"] == status, body
        status_text = dmg(cloud, "gateway", "status", gateway)
        assert f"gateway {gateway}: {status}" in status_text
        if not reason:
            assert body["reasons"] == [] and "  - " not in status_text
            continue
        assert reason in body["reasons"][0]
        assert reason in status_text and reason in gateway_list
        assert body["reasons"][0] in html.unescape(page), gateway
