"""The CLI's plain HTTP client (dmg/cloud/plainhttp.py): used for an http:// cloud without
a proxy, with the same answers and one-line errors as httpx; a proxy in the environment
and an https:// cloud go through httpx, the certificate checked."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dmg.cloud.client import CloudClient
from dmg.cloud.plainhttp import PlainHTTP, PlainTimeout
from dmg.cloud.server import CloudProcess, start_cloud_subprocess
from dmg.embedded.tls import issue, make_ca
from dmg.errors import NotFound, Retryable
from dmg.procs import free_port
from settings import Settings
from tests.cli.conftest import DmgRunner, assert_one_line_error
from tests.cloud.conftest import make_pipeline, make_site
from tests.proxykit import running_proxy


def test_the_plain_client_gets_the_same_answers_and_errors(cli_cloud: CloudProcess) -> None:
    with CloudClient(cli_cloud.url, token=cli_cloud.api_token, plain_http=True, proxy=lambda: "") as plain, \
            CloudClient(cli_cloud.url, token=cli_cloud.api_token, proxy=lambda: "") as full:
        site = make_site(plain)
        name = make_pipeline(plain, site.gateway)
        assert plain._current_plain() is not None  # the plain connection is the one used
        assert plain.list_pipelines() == full.list_pipelines()
        run = plain.run_pipeline(name)
        assert plain.run(run["id"]) == full.run(run["id"])
        assert plain.list_runs(limit=1)[0]["id"] == run["id"]  # a query string
        with pytest.raises(NotFound) as missing:
            plain.run("no-such-run")
        assert "no-such-run" in str(missing.value)
        assert plain.run_report(run["id"]) == full.run_report(run["id"])  # streamed: httpx


def test_a_cloud_that_is_down_is_one_line(dmg: DmgRunner) -> None:
    result = dmg("pipeline", "run", "nightly", "--wait",
                 DMG_CLOUD_URL=f"http://127.0.0.1:{free_port('127.0.0.1')}", DMG_API_TOKEN="t")
    line = assert_one_line_error(result, contains="cannot reach the cloud at http://127.0.0.1:")
    assert "is `dmg cloud serve` running" in line and result.returncode == 1


def test_a_proxy_in_the_environment_is_used(dmg: DmgRunner, cli_cloud: CloudProcess) -> None:
    with CloudClient(cli_cloud.url, token=cli_cloud.api_token) as client:
        name = make_pipeline(client, make_site(client).gateway)
    with running_proxy() as proxy:
        result = dmg("pipeline", "run", name, "--wait", "--timeout", "0.2", HTTP_PROXY=proxy.url)
        assert result.returncode == 1 and "did not end within" in result.stderr, result.stderr
        assert proxy.count(f"/pipelines/{name}/runs") == 1, proxy.requests()


def _one_answer_server(answers: list[bytes]) -> tuple[int, threading.Thread]:
    """A real socket server: each connection reads one request and gets the next answer,
    then is closed (so a client's kept-alive connection is found closed)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        with listener:
            for answer in answers:
                conn, _ = listener.accept()
                with conn:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(65536)
                    if answer:
                        conn.sendall(answer)
                    else:
                        conn.recv(1)  # no answer: held until the client gives up and closes

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


def test_chunked_answers_a_closed_keepalive_and_a_timeout() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n[1, \r\n2\r\n2]\r\n0\r\n\r\n"
    sized = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    port, server = _one_answer_server([chunked, sized, b""])
    http = PlainHTTP(f"http://127.0.0.1:{port}", headers={}, timeout=5.0)
    try:
        assert http.request("GET", "/a").json() == [1, 2]
        # the server closed that connection: the GET goes again on a new one
        assert http.request("GET", "/b").json() == {}
        with pytest.raises(PlainTimeout):
            http.request("GET", "/c", timeout=0.3)
    finally:
        http.close()
    server.join(5)


@pytest.fixture(scope="module")
def tls_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CloudProcess, Path]]:
    tmp = tmp_path_factory.mktemp("tls-cloud")
    ca = make_ca()
    server = issue(ca, ["127.0.0.1"])
    (tmp / "ca.pem").write_bytes(ca.cert_pem)
    (tmp / "cert.pem").write_bytes(server.cert_pem)
    (tmp / "key.pem").write_bytes(server.key_pem)
    settings = Settings(data_dir=tmp, log_level="WARNING", cloud_tls_cert=str(tmp / "cert.pem"),
                        cloud_tls_key=str(tmp / "key.pem"), cloud_ca=str(tmp / "ca.pem"))
    cloud = start_cloud_subprocess(settings, bind="127.0.0.1:0")
    try:
        yield cloud, tmp / "ca.pem"
    finally:
        cloud.stop()


def test_an_https_cloud_is_checked_against_its_ca(tls_cloud: tuple[CloudProcess, Path],
                                                  dmg: DmgRunner) -> None:
    cloud, ca = tls_cloud
    assert cloud.url.startswith("https://")
    with CloudClient(cloud.url, token=cloud.api_token, ca=str(ca), plain_http=True) as client:
        assert client._current_plain() is None  # https: httpx
        name = make_pipeline(client, make_site(client).gateway)
    env = {"DMG_CLOUD_URL": cloud.url, "DMG_API_TOKEN": cloud.api_token}
    trusted = dmg("pipeline", "run", name, "--wait", "--timeout", "0.2", **env, DMG_CLOUD_CA=str(ca))  # type: ignore[arg-type]
    assert trusted.returncode == 1 and "did not end within" in trusted.stderr, trusted.stderr
    untrusted = dmg("pipeline", "run", name, "--wait", **env)  # type: ignore[arg-type]
    assert_one_line_error(untrusted, contains="not signed by a CA this client trusts")


def test_an_unreachable_cloud_is_retryable_for_the_client() -> None:
    down = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    client = CloudClient(down, plain_http=True, proxy=lambda: "")
    with client, pytest.raises(Retryable) as unreachable:
        client.list_runs()
    assert "cannot reach the cloud" in str(unreachable.value)


def test_a_post_on_a_kept_connection_the_server_closed_goes_on_a_new_one() -> None:
    sized = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    port, server = _one_answer_server([sized, sized])
    http = PlainHTTP(f"http://127.0.0.1:{port}", headers={}, timeout=5.0)
    try:
        assert http.request("POST", "/a", body=b"{}").json() == {}
        time.sleep(0.2)  # the server closes that connection (its keep-alive timeout, say)
        # found closed before the request is sent: no request lost, none refused
        assert http.request("POST", "/b", body=b"{}").json() == {}
    finally:
        http.close()
    server.join(5)


def _held_then_quick_server() -> tuple[int, threading.Event]:
    """A real socket server, a thread per connection: a request for ``/held`` is answered
    once the returned event is set, any other at once."""
    listener = socket.create_server(("127.0.0.1", 0))
    release = threading.Event()

    def answer(conn: socket.socket) -> None:
        with conn:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(data) < length:
                    data += conn.recv(65536)
                data = data[length:]
                if b"/held " in head.split(b"\r\n")[0]:
                    release.wait(10)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], release


def test_a_long_poll_does_not_hold_up_another_threads_requests() -> None:
    """The dispatcher's claim long-polls on one thread while its reports go on another."""
    port, release = _held_then_quick_server()
    client = CloudClient(f"http://127.0.0.1:{port}", plain_http=True, proxy=lambda: "")
    held: list[Any] = []
    poll = threading.Thread(target=lambda: held.append(client.request("POST", "/held", json={})))
    try:
        poll.start()
        time.sleep(0.2)  # the long-poll's request is under way
        began = time.monotonic()
        assert client.request("POST", "/quick", json={}) == {}
        assert client.request("GET", "/quick") == {}  # twice: its connection is kept
        assert time.monotonic() - began < 1.0
        assert not held
    finally:
        release.set()
        poll.join(5)
        client.close()
    assert held == [{}]
