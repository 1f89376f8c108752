"""Helpers for the node-runtime tests: polling, files, shard specs, a real HTTP cloud stub."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from dmg.connectors import Entry, StoreSpec
from dmg.connectors.file import FileConnector
from dmg.procs import free_port
from dmg.shards import ShardSpec
from dmg.site.boundary import SiteRedis
from tests import waiting

T = TypeVar("T")


def wait_for(probe: Callable[[], T], *, timeout: float = 30.0, what: str = "condition",
             interval: float = 0.05) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` s."""
    return waiting.wait_for(probe, timeout=timeout, what=what, interval=interval)


def write_files(root: Path, files: dict[str, int]) -> None:
    """Create ``files`` (relative path -> size) under ``root`` with random bytes."""
    for rel, size in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))


def file_store(name: str, root: Path) -> StoreSpec:
    root.mkdir(parents=True, exist_ok=True)
    return StoreSpec(name, "file", str(root))


def shard_spec(shard_id: str, source: StoreSpec, source_path: str, sink: StoreSpec, sink_path: str,
               *, options: dict[str, Any] | None = None,
               entries: list[Entry] | None = None) -> dict[str, Any]:
    """The spec the dispatcher would write, listing the source now unless ``entries`` given."""
    if entries is None:
        entries = list(FileConnector(source).list(source_path))
    return ShardSpec(shard_id=shard_id, activity_run_id=shard_id.rsplit("-", 1)[0], index=0,
                     source_store=source, source_path=source_path, sink_store=sink, sink_path=sink_path,
                     entries=tuple(entries), options=options or {}).to_json()


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> content)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class StubCloud:
    """A real HTTP server on 127.0.0.1 speaking the node side of the cloud API.

    Records shard reports, file results (the single route's objects only, as a cloud
    without rows) and heartbeats. ``fail_next`` answers that many requests
    with 503 (Retryable); ``refuse_reports`` answers reports with a stale_attempt 409.
    """

    def __init__(self) -> None:
        self.reports: list[tuple[str, dict[str, Any]]] = []
        self.files: list[tuple[str, dict[str, Any]]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.fail_next = 0
        self.refuse_reports = False
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                status, answer = stub.handle(self.path, body)
                payload = json.dumps(answer).encode() if answer is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def handle(self, path: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return 503, {"error": "retryable", "message": "busy", "hint": ""}
            if path.startswith("/api/v1/shards/") and path.endswith("/report"):
                if self.refuse_reports:
                    return 409, {"error": "stale_attempt", "message": "a newer attempt exists", "hint": ""}
                self.reports.append((path.split("/")[4], body))
                return 204, None
            if path.startswith("/api/v1/shards/") and path.endswith("/files") and "rows" not in body:
                self.files.append((path.split("/")[4], body))
                return 200, {"recorded": len(body["files"])}
            if path == "/api/v1/nodes/heartbeat":
                self.heartbeats.append(body)
                return 200, {"status": "Online", "reasons": []}
            return 404, {"error": "not_found", "message": f"no route {path}", "hint": ""}

    def statuses(self, shard_id: str) -> list[tuple[str, int, str]]:
        with self.lock:
            return [(r["status"], r["attempt"], r["node"]) for s, r in self.reports if s == shard_id]

    def __enter__(self) -> StubCloud:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def dead_redis() -> redis.Redis:
    """A client of a Redis that is not there (nothing listens on its port), without retries."""
    return SiteRedis(port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5,
                     retry=Retry(NoBackoff(), 0))


def iter_lines(path: Path) -> Iterator[str]:
    if path.exists():
        yield from path.read_text(errors="replace").splitlines()
