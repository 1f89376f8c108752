"""Copies through the whole gateway: one embedded site per test module.

The ``gateway`` fixture (module scope) starts an :class:`EmbeddedSite` of two nodes
(real Redis, cloud, node processes and their Celery workers) whose nodes read store
secrets from ``<data dir>/credentials.toml``, check their stores every second, and
each have a HOME of their own (``~`` is a different place on each node, as on two
machines). Stores come from the session's real servers: moto (S3), Azurite and
PostgreSQL, started by :mod:`tests.servers`.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dmg.cli.runview import wait_for_run
from dmg.embedded.redis import redis_binary
from dmg.embedded.site import EmbeddedSite
from dmg.errors import Fatal
from dmg.procs import free_port
from settings import Settings
from tests import waiting
from tests.conftest import require
from tests.servers.azurite import azure_container, azurite  # noqa: F401
from tests.servers.postgres import postgres_server  # noqa: F401
from tests.servers.s3 import s3_bucket, s3_server  # noqa: F401

NODES = ("node1", "node2")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(probe: Callable[[], Any], *, timeout: float = 30.0, what: str = "a condition") -> Any:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` s."""
    return waiting.wait_for(probe, timeout=timeout, what=what)


class Credentials:
    """The site's credentials file (mode 0600), rewritten whole on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, str]] = {}

    def set(self, store: str, values: dict[str, str]) -> None:
        self.entries[store] = dict(values)
        lines = []
        for name, entry in sorted(self.entries.items()):
            lines.append(f'[stores."{name}"]')
            lines += [f"{key} = {json.dumps(value)}" for key, value in entry.items()]
            lines.append("")
        staging = self.path.with_name(".credentials.toml.tmp")
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines))
        os.replace(staging, self.path)


@dataclass
class Gateway:
    """A running site and helpers to define stores and run one-activity pipelines."""

    site: EmbeddedSite
    credentials: Credentials
    homes: dict[str, Path]
    stores: dict[str, dict[str, Any]] = field(default_factory=dict)

    def store(self, kind: str, location: str, options: dict[str, Any] | None = None, *,
              credential: dict[str, str] | None = None, name: str = "") -> str:
        """Add a store (and its secret to the site's file); returns its name."""
        name = name or unique(kind)
        if credential is not None:
            self.credentials.set(name, credential)
        with self.site.client() as client:
            self.stores[name] = client.add_store({"name": name, "type": kind, "location": location,
                                                  "options": options or {}})
        return name

    def pipeline(self, source: tuple[str, str], sink: tuple[str, str],
                 options: dict[str, Any] | None = None) -> dict[str, Any]:
        with self.site.client() as client:
            return client.create_pipeline({"name": unique("pl"), "gateway": self.site.gateway, "activities": [
                {"name": "copy", "source": {"store": source[0], "path": source[1]},
                 "sink": {"store": sink[0], "path": sink[1]}, "options": options or {}}]})

    def start(self, pipeline: dict[str, Any]) -> str:
        with self.site.client() as client:
            return str(client.run_pipeline(str(pipeline["name"]))["id"])

    def finish(self, run_id: str, *, timeout: float = 90.0) -> dict[str, Any]:
        with self.site.client() as client:
            return wait_for_run(client, run_id, poll=0.2, timeout=timeout)

    def copy(self, source: tuple[str, str], sink: tuple[str, str], options: dict[str, Any] | None = None, *,
             timeout: float = 90.0) -> dict[str, Any]:
        """Run a one-activity pipeline to its end; returns the final run."""
        return self.finish(self.start(self.pipeline(source, sink, options)), timeout=timeout)

    def nodes(self) -> dict[str, dict[str, Any]]:
        with self.site.client() as client:
            return {str(n["name"]): n for n in client.list_nodes(self.site.gateway)}

    def wait_reachability(self, store: str, *, unreachable_from: tuple[str, ...] = ()) -> dict[str, Any]:
        """Wait until exactly the nodes ``unreachable_from`` report ``store`` unreachable."""
        def settled() -> dict[str, Any] | None:
            nodes = self.nodes()
            blocked = tuple(sorted(n for n, row in nodes.items() if store in row["stores_unreachable"]))
            return nodes if blocked == tuple(sorted(unreachable_from)) else None
        return wait_until(settled, what=f"store {store} unreachable from exactly {unreachable_from}")


def shards(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for a in run["activity_runs"] for s in a["shards"]]


def assert_succeeded(run: dict[str, Any]) -> list[dict[str, Any]]:
    errors = [a["error"] for a in run["activity_runs"] if a["error"]]
    assert run["status"] == "Succeeded", errors or run
    parts = shards(run)
    assert parts and {s["status"] for s in parts} == {"succeeded"}
    return parts


def failure(run: dict[str, Any]) -> str:
    """The error of the run's one failed activity."""
    assert run["status"] == "Failed", run
    (activity,) = run["activity_runs"]
    assert activity["status"] == "Failed" and activity["error"], activity
    return str(activity["error"])


def site_settings(data_dir: Path) -> Settings:
    """Free ports, quick heartbeats, leases and store checks, small shards."""
    return Settings(
        data_dir=data_dir, redis_url=f"redis://127.0.0.1:{free_port()}/0",
        cloud_bind=f"127.0.0.1:{free_port()}", heartbeat_interval=0.5, offline_after=5.0, lease_ttl=3.0,
        claim_wait=2.0, shard_max_files=2, store_check_interval=1.0, log_level="WARNING")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One two-node site per test module, stopped (every process, by pid) at its end."""
    try:
        redis_binary()
    except Fatal as exc:
        require(False, str(exc))
    root = tmp_path_factory.mktemp("e2e")
    homes = {node: root / f"home-{node}" for node in NODES}
    for home in homes.values():
        home.mkdir()
    site = EmbeddedSite(site_settings(root / "site"), nodes=len(NODES), flower=False, node_concurrency=2,
                        startup_timeout=60,
                        node_environ={node: {"HOME": str(home)} for node, home in homes.items()})
    site.start()
    try:
        yield Gateway(site, Credentials(site.settings.credentials_path), homes)
    finally:
        site.stop()
