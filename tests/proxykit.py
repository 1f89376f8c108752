"""A tiny real HTTP proxy on 127.0.0.1 for tests: CONNECT tunnels and absolute-form
forwarding (``GET http://host:port/path``), one request per forwarded connection.

It counts what went through it (``requests``: ``(method, target)``), forwards only to
loopback addresses (any other target gets 403), and stops with its test.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_HEAD = 64 * 1024


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            chunk = src.recv(65536)
            if not chunk:
                break
            dst.sendall(chunk)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def _read_head(conn: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk or len(data) > MAX_HEAD:
            return b"", b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        conn: socket.socket = self.request
        conn.settimeout(30)
        head, rest = _read_head(conn)
        if not head:
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        with self.server.lock:
            self.server.requests.append((method, target))
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            path_line = None
        else:
            parts = urlsplit(target)
            host, port = parts.hostname or "", str(parts.port or 80)
            path_line = f"{method} {parts.path or '/'}{'?' + parts.query if parts.query else ''} {version}"
        if host.strip("[]") not in LOOPBACK:
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=30)
        except OSError:
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        with upstream:
            if path_line is None:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    upstream.sendall(rest)
            else:
                kept = [h for h in lines[1:] if not h.lower().startswith(("connection:", "proxy-"))]
                head_out = "\r\n".join([path_line, *kept, "Connection: close", "", ""])
                upstream.sendall(head_out.encode("latin-1") + rest)
            back = threading.Thread(target=_pipe, args=(upstream, conn), daemon=True)
            back.start()
            _pipe(conn, upstream)
            back.join(timeout=30)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []


class Proxy:
    """A running proxy: ``url``, ``requests`` seen so far, :meth:`count` of those matching."""

    def __init__(self, server: _Server) -> None:
        self._server = server

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[tuple[str, str]]:
        with self._server.lock:
            return list(self._server.requests)

    def count(self, part: str = "") -> int:
        return sum(1 for _, target in self.requests() if part in target)


@contextlib.contextmanager
def running_proxy() -> Iterator[Proxy]:
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield Proxy(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
