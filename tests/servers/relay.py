"""An HTTP relay for tests: forwards every request to a real server (moto) and its answer
back, records what each request carried, and can change a request on its way or lose an
answer (the server did the work; the client never hears it).

Used to check what dmg sends (headers, body) and how it survives a lost answer, with the
real server behind; nothing is simulated but the network's fault.
"""

from __future__ import annotations

import http.client
import http.server
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Seen:
    """One request as the relay received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Faults:
    """What the relay does wrong. ``lose_answer``: for the first request it matches, the
    request is forwarded and answered by the server, then the client's connection is closed
    without the answer. ``change_body``: returns the body forwarded instead of the one sent.
    ``hold``: a request it matches, received whole, waits (in :attr:`held`) until
    :attr:`release` is set (60 s at most), then goes on: its client is mid-request meanwhile."""

    lose_answer: Callable[[Seen], bool] | None = None
    change_body: Callable[[Seen], bytes] | None = None
    hold: Callable[[Seen], bool] | None = None
    lost: list[Seen] = field(default_factory=list)
    held: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


class Relay:
    """``Relay(target_url)`` listening on a free 127.0.0.1 port; :meth:`close` stops it."""

    def __init__(self, target_url: str, faults: Faults | None = None) -> None:
        self.seen: list[Seen] = []
        self.faults = faults or Faults()
        target = urlsplit(target_url)
        host, port = target.hostname or "127.0.0.1", target.port or 80
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(self.command, self.path, dict(self.headers.items()), body)
                relay.seen.append(seen)
                faults = relay.faults
                if faults.hold is not None and not faults.release.is_set() and faults.hold(seen):
                    faults.held.append(seen)
                    faults.release.wait(60)
                if faults.change_body is not None:
                    body = faults.change_body(seen)
                upstream = http.client.HTTPConnection(host, port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in {"content-length", "expect"}}
                    headers["Content-Length"] = str(len(body))
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    payload = answer.read()
                finally:
                    upstream.close()
                if faults.lose_answer is not None and not faults.lost and faults.lose_answer(seen):
                    faults.lost.append(seen)
                    self.close_connection = True
                    return  # the work is done upstream; the client hears nothing
                self.send_response(answer.status, answer.reason)
                for name, value in answer.getheaders():
                    if name.lower() not in {"content-length", "transfer-encoding", "connection"}:
                        self.send_header(name, value)
                length_sent = answer.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length_sent or str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="test-relay", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def flip_a_byte_of_part(number: int) -> Callable[[Seen], bytes]:
    """A ``change_body`` that flips one bit of multipart upload part ``number``'s body (its
    101st byte) and forwards every other body as sent."""
    def change(seen: Seen) -> bytes:
        if seen.method == "PUT" and f"partNumber={number}" in seen.path:
            return seen.body[:100] + bytes([seen.body[100] ^ 1]) + seen.body[101:]
        return seen.body
    return change
