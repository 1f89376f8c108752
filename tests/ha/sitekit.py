"""Helpers for outage tests on an :class:`EmbeddedSite`: quick thresholds, a throttled
file-to-file pipeline, polling the cloud, checking a run byte for byte.

Figures the tests measure (not assert) are printed as ``FIGURE <name> <value>`` and
appended to ``<data dir>/figures.txt``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dmg.cli.demo import KIB, compare_trees, generate_tree
from dmg.cli.runview import shards_of
from dmg.cloud.client import CloudClient
from dmg.embedded.faults import SiteUnderTest
from dmg.embedded.redis import redis_binary
from dmg.embedded.site import EmbeddedSite
from dmg.errors import Fatal, Retryable
from dmg.procs import free_port
from settings import Settings
from tests import waiting
from tests.conftest import require

T = TypeVar("T")


def require_redis() -> None:
    try:
        redis_binary()
    except Fatal as exc:
        require(False, str(exc))


def ha_settings(data_dir: Path, **changes: Any) -> Settings:
    """Free ports and small thresholds: offline after 3 s, a 2 s lease, beats every 0.5 s."""
    return Settings(
        data_dir=data_dir, redis_url=f"redis://127.0.0.1:{free_port()}/0",
        cloud_bind=f"127.0.0.1:{free_port()}", flower_port=free_port(), heartbeat_interval=0.5,
        offline_after=3.0, lease_ttl=2.0, claim_wait=1.0, shard_max_files=4, log_level="INFO",
    ).replace(**changes)


@contextlib.contextmanager
def running_site(site: EmbeddedSite) -> Iterator[EmbeddedSite]:
    """Start ``site``; stop every process it started at the end, even on failure."""
    try:
        site.start()
        yield site
    finally:
        site.stop()


def module_site(tmp_path_factory: pytest.TempPathFactory, *, nodes: int,
                node_concurrency: int, **changes: Any) -> Iterator[SiteUnderTest]:
    """A started site of the quick HA settings (with ``changes``) shared by a module's tests
    (a module-scoped fixture yields from it); every process stopped after the module."""
    require_redis()
    site = SiteUnderTest(ha_settings(tmp_path_factory.mktemp("site"), **changes), nodes=nodes,
                         node_concurrency=node_concurrency, flower=False, startup_timeout=60)
    with running_site(site):
        yield site


def wait_for(probe: Callable[[], T], *, timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy; AssertionError after ``timeout`` s.
    A cloud that does not answer (Retryable) counts as "not yet"."""
    return waiting.wait_for(probe, timeout=timeout, what=what, interval=interval, tolerate=(Retryable,))


@dataclass
class Copy:
    """A file-to-file pipeline of a generated tree, and where it goes."""

    pipeline: str
    source: Path
    sink: Path
    files: int


def throttled_copy(client: CloudClient, site: EmbeddedSite, root: Path, *, files: int = 24,
                   bandwidth: int = 256 * KIB, name: str = "ha-copy") -> Copy:
    """Stores and a pipeline copying ``files`` files of 8-24 KiB (``bandwidth`` bytes/s for
    the whole activity, so it takes a few seconds and shards overlap an outage)."""
    source, sink = root / "source", root / "sink"
    generate_tree(source, small_files=files, large_files=0, small_size=(8 * KIB, 24 * KIB))
    sink.mkdir(parents=True)
    client.add_store({"name": f"{name}-src", "type": "file", "location": str(source)})
    client.add_store({"name": f"{name}-dst", "type": "file", "location": str(sink)})
    client.create_pipeline({"name": name, "gateway": site.gateway, "activities": [{
        "name": "folder", "source": {"store": f"{name}-src", "path": ""},
        "sink": {"store": f"{name}-dst", "path": ""}, "options": {"bandwidth": bandwidth}}]})
    return Copy(name, source, sink, files)


def node_rows(client: CloudClient, site: EmbeddedSite) -> dict[str, dict[str, Any]]:
    return {str(r["name"]): r for r in client.list_nodes(site.gateway)}


def all_nodes(client: CloudClient, site: EmbeddedSite, check: Callable[[dict[str, Any]], bool]) -> bool:
    rows = node_rows(client, site)
    return all(name in rows and check(rows[name]) for name in site.node_names)


def online(row: dict[str, Any]) -> bool:
    return row.get("status") == "Online" and bool(row.get("limit"))


def limited_by(reason: str) -> Callable[[dict[str, Any]], bool]:
    def check(row: dict[str, Any]) -> bool:
        return row.get("status") == "Limited" and reason in (row.get("reasons") or [])
    return check


def shard_statuses(client: CloudClient, run_id: str) -> list[str]:
    return [str(s["status"]) for s in shards_of(client.run(run_id))]


def assert_copied_exactly(client: CloudClient, run_id: str, copy: Copy) -> dict[str, Any]:
    """The run Succeeded, the sink is the source byte for byte (no staging leftovers), and the
    cloud's per-shard files/bytes add up to what each shard planned."""
    run = client.run(run_id)
    assert run["status"] == "Succeeded", run
    diff = compare_trees(copy.source, copy.sink)
    assert diff.matches, diff.describe()
    shards = shards_of(run)
    assert shards and {s["status"] for s in shards} == {"succeeded"}, shards
    for shard in shards:
        assert shard["node"], shard
        assert (shard["files"], shard["bytes"]) == (shard["files_total"], shard["bytes_total"]), shard
    assert sum(s["files"] for s in shards) == copy.files
    assert sum(s["bytes"] for s in shards) == diff.bytes
    return run


def figure(site: EmbeddedSite, name: str, value: float) -> None:
    """Report a measured figure (never asserted)."""
    line = f"FIGURE {name} {value:.2f}"
    print(line)
    with open(site.data_dir / "figures.txt", "a") as fh:
        fh.write(line + "\n")
