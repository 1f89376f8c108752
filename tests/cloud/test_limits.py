"""Limits before work: an oversize body is refused unread, a caller without a token is
refused before its body is read, a chunked body is counted while it streams.

Given a real cloud process; when a client declares or streams a body far over the
limit (with or without a token); then the answer is a 413 / 401 JSON error at once,
and the cloud's resident memory does not grow by the body's size.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.cloud.conftest import Cloud, unique

MIB = 1024 * 1024


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _raw_answer(cloud: Cloud, head: str) -> tuple[int, dict[str, str]]:
    """Send only the request head (no body at all) and read the answer."""
    url = urlsplit(cloud.url)
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=10) as sock:
        sock.sendall(head.encode())
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1])


def _chunks(total: int, size: int = MIB) -> Iterator[bytes]:
    yield b'{"name": "'
    for _ in range(total // size):
        yield b"x" * size
    yield b'"}'


def test_a_declared_200_mb_body_is_refused_unread(cloud: Cloud) -> None:
    before = _rss_mib(cloud.process.pid)
    for path in ("/api/v1/gateways", "/api/v1/nodes/register", "/api/v1/shards/x/report"):
        head = (f"POST {path} HTTP/1.1\r\nHost: cloud\r\nContent-Type: application/json\r\n"
                f"Content-Length: {200 * MIB}\r\n\r\n")
        status, body = _raw_answer(cloud, head)
        assert status == 413 and body["error"] == "bad_input" and "more than" in body["message"]
    assert _rss_mib(cloud.process.pid) - before < 20


def test_a_streamed_body_without_a_token_is_refused_before_it_is_read(cloud: Cloud) -> None:
    before = _rss_mib(cloud.process.pid)
    status, body = _raw_answer(cloud, "POST /api/v1/gateways HTTP/1.1\r\nHost: cloud\r\n"
                                      "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert status == 401 and body["error"] == "unauthorized"
    answer = httpx.post(cloud.url + "/api/v1/dispatch/claim", content=_chunks(200 * MIB),
                        headers={"Authorization": "Bearer dmgn_not-a-token"}, timeout=60)
    assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"
    assert _rss_mib(cloud.process.pid) - before < 20


def test_a_streamed_body_is_counted_and_refused_past_the_limit(cloud: Cloud) -> None:
    user = {"Authorization": f"Bearer {cloud.process.api_token}", "Content-Type": "application/json"}
    before = _rss_mib(cloud.process.pid)
    answer = httpx.post(cloud.url + "/api/v1/gateways", content=_chunks(64 * MIB), headers=user, timeout=60)
    assert answer.status_code == 413 and "more than 8388608 bytes" in answer.json()["message"]
    assert _rss_mib(cloud.process.pid) - before < 40
    store = {"name": unique("big"), "type": "file", "location": "/x", "options": {"credential": "c" * 70_000}}
    streamed = httpx.post(cloud.url + "/api/v1/stores", content=iter([json.dumps(store).encode()]),
                          headers=user, timeout=60)
    assert streamed.status_code == 413 and "more than 65536" in streamed.json()["message"]
    assert httpx.get(cloud.url + "/api/v1/health").status_code == 200
