"""Helpers of the scale-out tests: a site's settings, polling, the stores, task results."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis as redis_lib

from dmg.embedded.redis import redis_binary
from dmg.embedded.site import EmbeddedSite
from dmg.errors import Fatal
from dmg.procs import free_port
from settings import Settings
from settings.celery import broker_key_prefix
from tests import waiting
from tests.cli.conftest import DmgRunner
from tests.conftest import require

KIB = 1024


def need_redis() -> None:
    try:
        redis_binary()
    except Fatal as exc:
        require(False, str(exc))


def site_settings(data_dir: Path, **changes: Any) -> Settings:
    """Free ports, short heartbeats, one file per shard (so a folder spreads over many nodes)."""
    return Settings(
        data_dir=data_dir, redis_url=f"redis://127.0.0.1:{free_port()}/0",
        cloud_bind=f"127.0.0.1:{free_port()}", heartbeat_interval=0.5, offline_after=5.0,
        lease_ttl=3.0, claim_wait=2.0, shard_max_files=1, log_level="WARNING",
    ).replace(**changes)


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``condition`` until it is truthy (returns its value) or ``timeout`` s pass."""
    return waiting.wait_for(condition, timeout=timeout, what=what, interval=every)


def write_files(root: Path, count: int, size: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"f{i:03d}.bin").write_bytes(os.urandom(size))


def copy_pipeline(site: EmbeddedSite, source: Path, sink: Path, *, name: str = "spread",
                  options: dict[str, Any] | None = None) -> None:
    """Stores ``src``/``dst`` and a one-activity pipeline ``name`` copying all of one to the other."""
    sink.mkdir(parents=True, exist_ok=True)
    with site.client() as client:
        client.add_store({"name": "src", "type": "file", "location": str(source)})
        client.add_store({"name": "dst", "type": "file", "location": str(sink)})
        client.create_pipeline({"name": name, "gateway": site.gateway, "activities": [
            {"name": "all", "source": {"store": "src", "path": ""}, "sink": {"store": "dst", "path": ""},
             "options": options or {}}]})


def finished(site: EmbeddedSite, run_id: str, *, timeout: float) -> dict[str, Any]:
    with site.client() as client:
        return wait_for(lambda: (r := client.run(run_id))["status"] in ("Succeeded", "Failed") and r,
                        timeout=timeout, what=f"run {run_id} to end", every=0.25)


def dmg_for(site: EmbeddedSite, cwd: Path) -> DmgRunner:
    return DmgRunner(env={"DMG_DATA_DIR": str(site.data_dir), "DMG_CLOUD_URL": site.settings.cloud_url,
                          "DMG_REDIS_URL": site.settings.redis_url,
                          "DMG_API_TOKEN": site.settings.api_token}, cwd=cwd)


def task_results(site: EmbeddedSite) -> dict[str, dict[str, Any]]:
    """The Celery results of ``dmg.copy_shard`` by task id (``<shard>:<attempt>``); a packed
    message's (``dmg.copy_shards``, dispatcher.packing) gives each shard it carried an entry of
    its own under the same name, its outcome as ``result`` (a second result for one attempt
    is kept too, as ``<shard>:<attempt>+again``: every end of an attempt is seen)."""
    client = redis_lib.Redis.from_url(site.broker_url())
    try:
        meta = f"{broker_key_prefix(site.gateway)}celery-task-meta-"
        keys = list(client.scan_iter(match=f"{meta}*", count=1000))
        values = client.mget(keys) if keys else []
    finally:
        client.close()
    found = {}
    for key, raw in zip(keys, values, strict=True):
        if raw:
            body = json.loads(raw)
            if isinstance(body.get("result"), list):  # a packed message: one entry per shard
                for outcome in body["result"]:
                    task_id = f"{outcome['shard_id']}:{outcome['attempt']}"
                    found[task_id + "+again" if task_id in found else task_id] = {**body, "result": outcome}
            else:
                task_id = key.decode().removeprefix(meta)
                found[task_id + "+again" if task_id in found else task_id] = body
    return found
