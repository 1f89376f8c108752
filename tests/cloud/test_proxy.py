"""The gateway's HTTP proxy: set once in the cloud, delivered with heartbeats, applied by
every node to its cloud and cloud-store traffic, part of the fingerprint.

A tiny real proxy on 127.0.0.1 (:mod:`tests.proxykit`) counts what goes through it; a
dead port stands for an unreachable proxy.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmg import proxy as dmg_proxy
from dmg.cloud.client import CloudClient
from dmg.connectors.base import StoreSpec
from dmg.errors import BadInput, Retryable
from dmg.procs import free_port
from dmg.registration import NodeRegistration
from dmg.site.state import SiteState
from settings import Settings
from tests.cli.conftest import clean_environ
from tests.cloud.conftest import Cloud, make_site
from tests.proxykit import Proxy, running_proxy
from tests.servers.azurite import AzuriteServer, azure_container, azurite  # noqa: F401
from tests.servers.s3 import S3Server, s3_bucket, s3_server  # noqa: F401
from workers.agent.node_agent import NodeAgent

DMG = Path(sys.executable).parent / "dmg"


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    with running_proxy() as running:
        yield running


@pytest.fixture
def applied(tmp_path: Path) -> Iterator[Path]:
    """This process's clients read the applied proxy from a file of this test's own."""
    path = tmp_path / "proxy"
    dmg_proxy.use(path)
    try:
        yield path
    finally:
        dmg_proxy.use(tmp_path / "none")


def _dmg(cloud: Cloud, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DMG), *args], capture_output=True, text=True, timeout=60,
                          env=clean_environ(DMG_CLOUD_URL=cloud.url, DMG_API_TOKEN=cloud.process.api_token))


def _agent(tmp_path: Path, cloud: Cloud, state: SiteState, gateway: str, node: str, token: str) -> NodeAgent:
    settings = Settings(data_dir=tmp_path / node, heartbeat_interval=0.2, offline_after=10.0)
    registration = NodeRegistration(cloud_url=cloud.url, gateway=gateway, node=node, token=token)
    agent = NodeAgent(settings, registration, state=state, cloud=None, worker_grace=3600)
    # The node's cloud client reads the proxy this node applied (its own file: two nodes, one process).
    agent.cloud = CloudClient(cloud.url, token=token, proxy=lambda: dmg_proxy.read(agent.proxy_file))
    return agent


def test_a_gateway_proxy_reaches_every_node_and_carries_its_cloud_traffic(
        tmp_path: Path, cloud: Cloud, user: CloudClient, state: SiteState, proxy: Proxy) -> None:
    site = make_site(user, nodes=("n1", "n2"))
    agents = [_agent(tmp_path, cloud, state, site.gateway, n, site.tokens[n]) for n in ("n1", "n2")]
    for name in ("n1", "n2"):  # their worker pools run
        state.publish_worker_load(name, running=0, limit=2, pids=[], ttl=60)
    for agent in agents:
        agent.beat_once()
    assert {n["name"]: n["status"] for n in user.list_nodes(site.gateway)} == {"n1": "Online", "n2": "Online"}

    url = proxy.url.replace("http://", "http://ops:pa55word@")
    result = _dmg(cloud, "gateway", "proxy", site.gateway, url)
    assert result.returncode == 0, result.stderr
    assert "pa55word" not in result.stdout and "***@127.0.0.1" in result.stdout

    # n1 applies it from the reply to its next beat; until n2 does, n2 is Inactive and says why.
    agents[0].beat_once()
    assert dmg_proxy.read(agents[0].proxy_file) == url
    assert agents[0].proxy_file.stat().st_mode & 0o077 == 0  # it may hold credentials
    rows = {n["name"]: n for n in user.list_nodes(site.gateway)}
    assert rows["n2"]["status"] == "Inactive"
    [reason] = rows["n2"]["reasons"]
    assert reason.startswith("proxy differs: none vs the gateway's http://***@127.0.0.1:")
    assert "pa55word" not in str(rows) and "pa55word" not in str(user.gateway(site.gateway))

    before = proxy.count("/api/v1/nodes/heartbeat")
    for agent in agents:
        agent.beat_once()  # n2 applies it
        # Both now beat through the proxy, with it in their fingerprint; n2 does not repeat the
        # cloud's Inactive about the proxy it has applied since (the dispatcher keeps placing on it).
        assert agent.beat_once()["inactive"] is False
    assert proxy.count("/api/v1/nodes/heartbeat") >= before + 3
    rows = {n["name"]: n for n in user.list_nodes(site.gateway)}
    assert {n: r["status"] for n, r in rows.items()} == {"n1": "Online", "n2": "Online"}, rows
    assert rows["n1"]["config"]["proxy"].startswith("http://***@127.0.0.1:")

    # Cleared: the nodes go direct again, and never through the proxy to the broker.
    assert _dmg(cloud, "gateway", "proxy", site.gateway, "--clear").returncode == 0
    for agent in agents:
        agent.beat_once()
    seen = proxy.count()
    for agent in agents:
        agent.beat_once()
    assert proxy.count() == seen
    assert not any(str(state.redis.connection_pool.connection_kwargs.get("port")) in target
                   for _, target in proxy.requests())
    assert {n["status"] for n in user.list_nodes(site.gateway)} == {"Online"}


def test_a_bad_proxy_url_is_refused_in_one_line(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user, nodes=("n1",))
    with pytest.raises(BadInput, match=r"proxy URL ftp://.*not an http"):
        user.set_proxy(site.gateway, "ftp://127.0.0.1:21")
    result = _dmg(cloud, "gateway", "proxy", site.gateway, "http://u:secret@127.0.0.1:1/some/path")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and "secret" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_unreachable_proxy_says_proxy_and_its_url(cloud: Cloud, user: CloudClient, applied: Path) -> None:
    site = make_site(user, nodes=("n1",))
    dead = f"http://ops:pa55word@127.0.0.1:{free_port()}"
    dmg_proxy.apply(applied, dead)
    with CloudClient(cloud.url, token=site.tokens["n1"], timeout=5) as node, \
            pytest.raises(Retryable) as refused:
        node.heartbeat({"role": "worker"})
    message = str(refused.value)
    assert "proxy http://***@127.0.0.1:" in message and "pa55word" not in message


def test_s3_traffic_goes_through_the_proxy(s3_server: S3Server, s3_bucket: str,  # noqa: F811
                                           proxy: Proxy, applied: Path) -> None:
    from dmg.connectors.s3 import S3Connector

    s3_server.client().put_object(Bucket=s3_bucket, Key="root/a.txt", Body=b"hello")
    spec = StoreSpec("lake", "s3", f"s3://{s3_bucket}/root",
                     {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region,
                      "addressing_style": "path", "max_attempts": 1})
    dmg_proxy.apply(applied, proxy.url)
    through = S3Connector(spec, credential=s3_server.credential)
    assert [e.path for e in through.list("")] == ["a.txt"]
    assert proxy.count(f"127.0.0.1:{s3_server.endpoint_url.rsplit(':', 1)[1]}") >= 1

    dmg_proxy.apply(applied, f"http://ops:pa55word@127.0.0.1:{free_port()}")
    with pytest.raises(Retryable) as refused:
        list(S3Connector(spec, credential=s3_server.credential).list(""))
    assert "proxy http://***@127.0.0.1:" in str(refused.value) and "pa55word" not in str(refused.value)


def test_azure_traffic_goes_through_the_proxy(azurite: AzuriteServer, azure_container: str,  # noqa: F811
                                              proxy: Proxy, applied: Path) -> None:
    from dmg.connectors.azureblob import AzureBlobConnector

    spec = StoreSpec("blobs", "azureblob", f"azureblob://{azure_container}/root", {"retry_total": 0})
    dmg_proxy.apply(applied, proxy.url)
    through = AzureBlobConnector(spec, credential=azurite.credential)
    assert list(through.list("")) == []
    assert proxy.count(f"127.0.0.1:{azurite.port}") >= 1

    dmg_proxy.apply(applied, f"http://ops:pa55word@127.0.0.1:{free_port()}")
    with pytest.raises(Retryable) as refused:
        list(AzureBlobConnector(spec, credential=azurite.credential).list(""))
    assert "proxy http://***@127.0.0.1:" in str(refused.value) and "pa55word" not in str(refused.value)
