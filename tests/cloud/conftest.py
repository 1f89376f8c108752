"""Fixtures: the cloud as a real server (``python -m dmg.cloud serve``) on a free port.

``cloud`` is one server for the session (max 3 nodes per gateway); tests keep
out of each other's way with unique names (``unique``). ``start_cloud`` starts
a server of a test's own with other settings; every server is stopped at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dmg.cloud.client import CloudClient
from dmg.cloud.schemas import PipelineCreate, StoreCreate
from dmg.cloud.server import CloudProcess, start_cloud_subprocess
from dmg.cloud.service import CloudService, NodeIdentity
from settings import Settings
from tests.servers.postgres import postgres_server, postgres_url  # noqa: F401

MAX_NODES = 3


@dataclass
class Cloud:
    process: CloudProcess
    settings: Settings
    db_url: str

    @property
    def url(self) -> str:
        return self.process.url

    def user(self) -> CloudClient:
        return CloudClient(self.url, token=self.process.api_token)

    def node(self, token: str) -> CloudClient:
        return CloudClient(self.url, token=token)

    def stop(self) -> None:
        self.process.stop()


def launch(data_dir: Path, *, db: str | None = None, bind: str = "127.0.0.1:0", timeout: float = 30.0,
           **overrides: Any) -> Cloud:
    settings = Settings(data_dir=data_dir, max_nodes_per_gateway=MAX_NODES, log_level="WARNING")
    settings = settings.replace(**overrides)
    process = start_cloud_subprocess(settings, bind=bind, db=db, timeout=timeout)
    return Cloud(process=process, settings=settings, db_url=db or settings.cloud_db_url)


@pytest.fixture(scope="session")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    server = launch(tmp_path_factory.mktemp("cloud"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_cloud(tmp_path: Path) -> Iterator[Callable[..., Cloud]]:
    """``start_cloud(db=None, **settings)`` -> a server of this test's own."""
    started: list[Cloud] = []

    def start(*, db: str | None = None, **overrides: Any) -> Cloud:
        server = launch(tmp_path / f"cloud{len(started)}", db=db, **overrides)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def user(cloud: Cloud) -> Iterator[CloudClient]:
    with cloud.user() as client:
        yield client


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Site:
    """A gateway with registered nodes, for dispatch tests."""

    gateway: str
    keys: dict[str, str]
    tokens: dict[str, str]


def make_site(client: CloudClient, *, nodes: tuple[str, ...] = ("n1",), version: str = "1.0.0") -> Site:
    gateway = unique("gw")
    created = client.create_gateway(gateway)
    keys = {"key1": created["key1"], "key2": created["key2"]}
    tokens = {}
    for name in nodes:
        tokens[name] = client.register_node(key=keys["key1"], name=name, version=version)["token"]
    return Site(gateway=gateway, keys=keys, tokens=tokens)


def make_pipeline(client: CloudClient, gateway: str, *, activities: int = 1) -> str:
    source, sink = unique("src"), unique("dst")
    client.add_store({"name": source, "type": "file", "location": "/data/in"})
    client.add_store({"name": sink, "type": "s3", "location": "s3://bucket/out",
                      "options": {"region": "us-east-1"}})
    name = unique("pl")
    client.create_pipeline({
        "name": name, "gateway": gateway,
        "activities": [{"name": f"copy{i}", "source": {"store": source, "path": f"dir{i}"},
                        "sink": {"store": sink, "path": f"out{i}"}, "options": {"overwrite": True}}
                       for i in range(activities)],
    })
    return name


def place(dispatcher: CloudClient, shard_id: str, node: str, *, attempt: int = 1, epoch: int | None = None,
          **fields: Any) -> None:
    """The dispatcher's ``placed`` report: attempt ``attempt`` of the shard is on ``node``
    (the cloud takes a worker's reports only from the node its attempt was placed on)."""
    report: dict[str, Any] = {"attempt": attempt, "node": node, "status": "placed", **fields}
    if epoch is not None:
        report["epoch"] = epoch
    dispatcher.report_shard(shard_id, report)


def drop_dispatcher(cloud: Cloud, token: str, *, epoch: int, gateway: str) -> None:
    """The dispatcher's process goes away in the middle of its long-poll: it opens a
    claim that waits, then its connection closes. The cloud frees its dispatcher lease
    (no wait for the lease TTL); returns once the gateway shows no lease."""
    import json
    import socket
    import time
    from urllib.parse import urlsplit

    from tests.waiting import wait_for

    url = urlsplit(cloud.url)
    body = json.dumps({"epoch": epoch, "wait": 30}).encode()
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=10) as sock:
        sock.sendall(b"POST /api/v1/dispatch/claim HTTP/1.1\r\nHost: cloud\r\n"
                     + f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n".encode()
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.3)  # the claim is waiting (a process killed mid-poll)
    with cloud.user() as user:
        wait_for(lambda: user.gateway(gateway).get("dispatcher") is None, timeout=10,
                 what="the cloud to free the dropped dispatcher's lease")


def service_site(svc: CloudService, data: Path,
                 pipelines: dict[str, int]) -> tuple[NodeIdentity, NodeIdentity]:
    """In a :class:`CloudService` of this process: gateway gw with nodes d and w, file
    stores src and dst under ``data``, and a pipeline per name of ``pipelines`` with that
    many one-file activities -> (d, w) as the service knows them."""
    keys = svc.create_gateway("gw")
    d, w = (svc.authenticate_node(svc.register_node(key=keys["key1"], name=name, version="1.0.0")["token"])
            for name in ("d", "w"))
    svc.add_store(StoreCreate(name="src", type="file", location=str(data / "in")))
    svc.add_store(StoreCreate(name="dst", type="file", location=str(data / "out")))
    for name, count in pipelines.items():
        svc.create_pipeline(PipelineCreate.model_validate({"name": name, "gateway": "gw", "activities": [
            {"name": f"a{i}", "source": {"store": "src", "path": f"f{i}"},
             "sink": {"store": "dst", "path": f"f{i}"}} for i in range(count)]}))
    return d, w


def claimed_run(cloud: Cloud, *, activities: int = 1) -> tuple[Site, str, list[str]]:
    """A gateway (d dispatches, w works) whose run of ``activities`` was claimed by d at
    site epoch 1, not planned; -> (site, run id, activity run ids)."""
    with cloud.user() as user:
        site = make_site(user, nodes=("d", "w"))
        run = user.run_pipeline(make_pipeline(user, site.gateway, activities=activities))
    with cloud.node(site.tokens["d"]) as d:
        claimed = d.claim_activity_runs(epoch=1, wait=0, limit=activities)
    return site, run["id"], [a["id"] for a in claimed]
