"""A plain HTTP/1.1 client on one keep-alive connection: the CLI's few requests to an
``http://`` cloud reached without a proxy (:class:`dmg.cloud.client.CloudClient` with
``plain_http=True`` decides when it applies; HTTPS and proxies stay with httpx).

Why: a short command such as ``dmg pipeline run NAME --wait`` spends more CPU importing
httpx (httpcore, h11, anyio, idna, ``urllib.request``) than on its three requests, and
:mod:`http.client` imports :mod:`ssl` and the :mod:`email` package. This module needs only
:mod:`socket`. It speaks what the cloud answers: a request with a body of known length,
an answer framed by ``Content-Length`` or chunked, keep-alive.

Raises :class:`PlainTimeout` when the cloud does not answer within the timeout,
:class:`PlainUnreachable` when it cannot be reached or the connection breaks. A ``GET``
whose reused connection turns out closed by the server is sent once more on a new one; a
kept connection the server has closed meanwhile (its keep-alive timeout) is found before a
request is sent on it, so any method goes on a new one.

:class:`PlainPool` gives each request under way a connection of its own (a long-poll on one
thread does not hold up another thread's requests) and keeps the idle ones for the next.
"""

from __future__ import annotations

import select
import socket
import threading
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

#: The characters a path keeps as they are (RFC 3986 ``pchar`` and ``/``; ``%`` keeps an
#: already encoded path as it is, as httpx does).
PATH_SAFE = "/:@!$&'()*+,;=%-._~"
MAX_LINE = 65536
MAX_HEADERS = 100


def _query_value(value: Any) -> str:
    """A query value written as httpx writes it (``true``/``false``, "" for None)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class PlainTimeout(Exception):
    """The cloud did not answer in time."""


class PlainUnreachable(Exception):
    """The cloud could not be reached, or the connection broke."""


class _Closed(PlainUnreachable):
    """A reused connection was closed by the server before any answer (safe to retry a GET)."""


class PlainResponse:
    """An answer: ``status_code``, ``headers`` (lower-case names), ``content``."""

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        import json

        return json.loads(self.content)


class PlainHTTP:
    """One connection to ``base_url`` (``http://host[:port][/prefix]``), opened on first
    use and kept open; requests are serialized (one at a time)."""

    def __init__(self, base_url: str, *, headers: dict[str, str], timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not an http:// URL: {base_url}")
        host = parts.hostname
        # An ASCII host goes to getaddrinfo as bytes: a str host is encoded with the idna
        # codec first, whose import (with stringprep) costs a short command ~2 ms.
        self._address: tuple[str | bytes, int] = (host.encode("ascii") if host.isascii() else host,
                                                  parts.port or 80)
        self._host = parts.netloc.rpartition("@")[2]
        self._prefix = parts.path.rstrip("/")
        self._headers = headers
        self._timeout = timeout
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._reader: Any = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                body: bytes | None = None, content_type: str = "",
                timeout: float | None = None) -> PlainResponse:
        """Send one request and read its whole answer. Raises PlainTimeout, PlainUnreachable."""
        target = quote(self._prefix + path, safe=PATH_SAFE)
        if params:
            target += "?" + urlencode({k: _query_value(v) for k, v in params.items()})
        head = [f"{method} {target} HTTP/1.1", f"Host: {self._host}", "Accept: */*",
                "User-Agent: dmg-cli", *(f"{k}: {v}" for k, v in self._headers.items())]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body or b'')}")
            if content_type:
                head.append(f"Content-Type: {content_type}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")
        with self._lock:
            try:
                return self._exchange(data, method, timeout)
            except _Closed:
                self._drop()
                if method != "GET":
                    raise
                return self._exchange(data, method, timeout)  # a new connection, once

    def _exchange(self, data: bytes, method: str, timeout: float | None) -> PlainResponse:
        if self._sock is not None and _closed_by_peer(self._sock):
            self._drop()  # closed by the server while idle: nothing was sent on it since
        reused = self._sock is not None
        try:
            sock = self._connect()
            sock.settimeout(self._timeout if timeout is None else timeout)
            sock.sendall(data)
            response = self._read_response(method, reused=reused)
        except TimeoutError:
            self._drop()
            raise PlainTimeout("no answer in time") from None
        except PlainUnreachable:
            self._drop()
            raise
        except ValueError as exc:  # a malformed length or chunk size
            self._drop()
            raise PlainUnreachable(f"the cloud's answer is malformed: {exc}") from None
        except OSError as exc:
            self._drop()
            if reused and isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                raise _Closed(str(exc)) from exc
            raise PlainUnreachable(str(exc)) from exc
        if response.headers.get("connection", "").lower() == "close":
            self._drop()
        return response

    def _connect(self) -> socket.socket:
        if self._sock is None:
            try:
                sock = socket.create_connection(self._address, timeout=self._timeout)  # type: ignore[arg-type]
            except TimeoutError:
                raise PlainTimeout("connect timed out") from None
            except OSError as exc:
                raise PlainUnreachable(str(exc)) from exc
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock, self._reader = sock, sock.makefile("rb")
        return self._sock

    @property
    def open(self) -> bool:
        """Whether a connection is kept (it may be reused)."""
        return self._sock is not None

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        if sock is not None:
            sock.close()

    def _line(self) -> bytes:
        line: bytes = self._reader.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise PlainUnreachable("the cloud sent a line too long")
        return line

    def _read_response(self, method: str, *, reused: bool) -> PlainResponse:
        status_line = self._line()
        if not status_line:
            raise (_Closed if reused else PlainUnreachable)("the connection closed before an answer")
        version, _, rest = status_line.decode("latin-1").partition(" ")
        code = rest.split(" ", 1)[0]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise PlainUnreachable("the cloud's answer is not HTTP/1.1")
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = self._line()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise PlainUnreachable("the cloud sent too many headers")
        status = int(code)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return PlainResponse(status, headers, b"")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return PlainResponse(status, headers, self._read_chunked())
        if "content-length" in headers:
            return PlainResponse(status, headers, self._read_exactly(int(headers["content-length"])))
        headers["connection"] = "close"  # framed by the end of the connection
        return PlainResponse(status, headers, self._reader.read())

    def _read_exactly(self, size: int) -> bytes:
        content: bytes = self._reader.read(size)
        if len(content) != size:
            raise PlainUnreachable("the connection closed in the middle of an answer")
        return content

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = self._line().split(b";", 1)[0].strip()
            if not size_line:
                raise PlainUnreachable("the connection closed in the middle of an answer")
            size = int(size_line, 16)
            if size == 0:
                while self._line() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self._read_exactly(size))
            self._line()  # the CRLF after each chunk


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether an idle kept connection has something to read: the server closed it (or
    sent what no request asked for). Either way it is not to be used again."""
    try:
        if hasattr(select, "poll"):  # any descriptor number (select() stops at 1024)
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class PlainPool:
    """Plain connections to one cloud, one per request under way: :meth:`request` takes an
    idle connection (or opens one) and keeps it for the next request once its answer is
    read. Thread-safe; as many connections as requests ever ran at once."""

    def __init__(self, base_url: str, *, headers: dict[str, str], timeout: float) -> None:
        PlainHTTP(base_url, headers=headers, timeout=timeout)  # the URL's check, at once
        self._base_url = base_url
        self._headers = headers
        self._timeout = timeout
        self._lock = threading.Lock()
        self._idle: list[PlainHTTP] = []
        self._closed = False

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                body: bytes | None = None, content_type: str = "",
                timeout: float | None = None) -> PlainResponse:
        """:meth:`PlainHTTP.request` on a connection of this request's own."""
        with self._lock:
            http = self._idle.pop() if self._idle else None
        if http is None:
            http = PlainHTTP(self._base_url, headers=self._headers, timeout=self._timeout)
        try:
            return http.request(method, path, params=params, body=body, content_type=content_type,
                                timeout=timeout)
        finally:
            with self._lock:
                keep = not self._closed and http.open
                if keep:
                    self._idle.append(http)
            if not keep:
                http.close()

    def close(self) -> None:
        """Close the idle connections; one under way is closed when its request ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for http in idle:
            http.close()
