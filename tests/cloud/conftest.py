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
from dmg.cloud.server import CloudProcess, start_cloud_subprocess
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


def launch(data_dir: Path, *, db: str | None = None, **overrides: Any) -> Cloud:
    settings = Settings(data_dir=data_dir, max_nodes_per_gateway=MAX_NODES, log_level="WARNING")
    settings = settings.replace(**overrides)
    process = start_cloud_subprocess(settings, bind="127.0.0.1:0", db=db)
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
