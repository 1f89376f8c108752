"""Every Redis client dmg builds, over TLS and with a password, against real redis-servers
(Debian's is built with TLS) holding certificates made for each case: the right CA, a wrong
CA, a wrong host name, a wildcard name. A wrong CA or host name fails with one line that
says which, from dmg's own client, the Celery worker and Flower's start.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from dmg.embedded.redis import EmbeddedRedis
from dmg.embedded.tls import KeyPair, SiteTLS, issue, make_ca, write_pair
from dmg.errors import BrokerError, Fatal
from dmg.procs import free_port
from dmg.site.connection import check_broker_certificate, redis_client
from settings import Settings, process_environ, settings_environ
from settings.celery import celery_config
from tests.ha.sitekit import require_redis

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-for-the-test"


@dataclass
class TlsRedis:
    server: EmbeddedRedis
    ca: Path
    root: Path

    @property
    def port(self) -> int:
        return self.server.port

    def settings(self, *, host: str = "127.0.0.1", ca: Path | None = None, scheme: str = "rediss",
                 **changes: Any) -> Settings:
        return Settings(data_dir=self.root / "client", redis_url=f"{scheme}://{host}:{self.port}/0",
                        redis_tls_ca=str(ca or self.ca), redis_password=PASSWORD).replace(**changes)


def start_tls_redis(root: Path, ca: KeyPair, hosts: tuple[str, ...]) -> TlsRedis:
    root.mkdir(parents=True, exist_ok=True)
    files = SiteTLS(ca=root / "ca.pem", cert=root / "server.pem", key=root / "server-key.pem")
    write_pair(ca, files.ca, root / "ca-key.pem")
    write_pair(issue(ca, hosts), files.cert, files.key)
    server = EmbeddedRedis(root / "data", free_port(), password=PASSWORD, tls=files, appendonly=False)
    return TlsRedis(server.start(), files.ca, root)


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return make_ca("test CA")


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, ca: KeyPair) -> Iterator[TlsRedis]:
    """A TLS-only Redis whose certificate names 127.0.0.1 and localhost."""
    require_redis()
    found = start_tls_redis(tmp_path_factory.mktemp("local"), ca, ("localhost", "127.0.0.1"))
    yield found
    found.server.stop()


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory, ca: KeyPair) -> Iterator[TlsRedis]:
    """A TLS-only Redis whose certificate names redis.example only, and one for *.dmg.test."""
    require_redis()
    found = start_tls_redis(tmp_path_factory.mktemp("named"), ca, ("redis.example",))
    yield found
    found.server.stop()


@pytest.fixture(scope="module")
def wildcard(tmp_path_factory: pytest.TempPathFactory, ca: KeyPair) -> Iterator[TlsRedis]:
    require_redis()
    found = start_tls_redis(tmp_path_factory.mktemp("wild"), ca, ("*.dmg.test",))
    yield found
    found.server.stop()


@pytest.fixture()
def other_ca(tmp_path: Path) -> Path:
    path = tmp_path / "other-ca.pem"
    path.write_bytes(make_ca("another CA").cert_pem)
    return path


@contextlib.contextmanager
def resolving(name: str, to: str = "127.0.0.1") -> Iterator[None]:
    """``name`` resolves to ``to`` in this process (the machine has no DNS for test names;
    the TLS handshake, with ``name`` as the server name, is real)."""
    real = socket.getaddrinfo

    def fake(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real(to if host == name else host, *args, **kwargs)

    socket.getaddrinfo = fake  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.getaddrinfo = real  # type: ignore[assignment]


def test_dmg_client_uses_tls_and_the_password(local: TlsRedis) -> None:
    client = redis_client(local.settings(), timeout=5)
    try:
        assert client.set("tls-check", "1") and client.get("tls-check") == b"1"
    finally:
        client.close()
    # TLS settings with a redis:// URL: TLS anyway (the URL's scheme is upgraded)
    upgraded = redis_client(local.settings(scheme="redis"), timeout=5)
    try:
        assert upgraded.ping()
    finally:
        upgraded.close()


def test_the_password_is_required(local: TlsRedis) -> None:
    anonymous = redis_client(local.settings(redis_password=""), timeout=5)
    try:
        with pytest.raises(BrokerError) as refused:
            anonymous.ping()
        assert str(refused.value).startswith("the site broker refused the login: no password or a wrong one")
    finally:
        anonymous.close()


def test_a_wrong_ca_fails_with_one_line_saying_so(local: TlsRedis, other_ca: Path) -> None:
    with pytest.raises(Fatal) as failed:
        check_broker_certificate(local.settings(ca=other_ca))
    line = str(failed.value)
    assert "\n" not in line
    assert line.startswith(f"TLS to the site broker at 127.0.0.1:{local.port} failed: wrong CA: "), line
    assert "DMG_REDIS_TLS_CA" in line, line


def test_a_wrong_host_name_fails_with_one_line_saying_so(elsewhere: TlsRedis) -> None:
    with pytest.raises(Fatal) as failed:
        check_broker_certificate(elsewhere.settings())
    line = str(failed.value)
    assert "\n" not in line
    assert line.startswith(f"TLS to the site broker at 127.0.0.1:{elsewhere.port} failed: "
                           "wrong host name: "), line
    with resolving("redis.example"):  # the name the certificate gives: accepted
        check_broker_certificate(elsewhere.settings(host="redis.example"))


def test_a_wildcard_certificate_is_accepted(wildcard: TlsRedis) -> None:
    with resolving("broker.dmg.test"):
        check_broker_certificate(wildcard.settings(host="broker.dmg.test"))
        client = redis_client(wildcard.settings(host="broker.dmg.test"), timeout=5)
        try:
            assert client.ping()
        finally:
            client.close()
    with resolving("a.b.dmg.test"), pytest.raises(Fatal, match="wrong host name"):
        check_broker_certificate(wildcard.settings(host="a.b.dmg.test"))  # one label only


def test_celery_broker_and_results_over_a_plain_rediss_url(local: TlsRedis,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``rediss://`` URL alone, checked against the system's CA store (here: the test CA via
    SSL_CERT_FILE, which OpenSSL reads for its default store). It used to crash Celery's result
    backend at start ("A rediss:// URL must have parameter ssl_cert_reqs")."""
    monkeypatch.setenv("SSL_CERT_FILE", str(local.ca))
    settings = local.settings(redis_tls_ca="", gateway="tls")
    app = Celery("tls-test", set_as_current=False)
    app.conf.update(celery_config(settings))
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
        app.backend.set("tls-result", b"ok")
        assert app.backend.get("tls-result") == b"ok"
    finally:
        app.close()


def run_process(args: list[str], settings: Settings) -> subprocess.CompletedProcess[str]:
    env = process_environ(settings_environ(settings))
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=90,
                          check=False)


def single_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def test_the_worker_and_flower_stop_with_one_line_on_a_wrong_ca(local: TlsRedis, other_ca: Path) -> None:
    settings = local.settings(ca=other_ca)
    worker = single_error(run_process(["-m", "celery", "-A", "workers.app", "worker", "-P", "solo",
                                       "--without-gossip", "--without-mingle"], settings))
    assert "wrong CA" in worker, worker
    flower = single_error(run_process(["-m", "dmg.cli.flower_start", "--address=127.0.0.1",
                                       f"--port={free_port()}"], settings))
    assert "wrong CA" in flower, flower


def test_the_worker_stops_with_one_line_on_a_wrong_host_name(elsewhere: TlsRedis) -> None:
    worker = single_error(run_process(["-m", "celery", "-A", "workers.app", "worker", "-P", "solo",
                                       "--without-gossip", "--without-mingle"], elsewhere.settings()))
    assert "wrong host name" in worker, worker


def test_a_site_on_an_external_broker_with_a_wrong_ca_does_not_start(local: TlsRedis, other_ca: Path) -> None:
    from dmg.embedded.site import EmbeddedSite

    site = EmbeddedSite(local.settings(ca=other_ca, cloud_bind=f"127.0.0.1:{free_port()}"), nodes=1,
                        flower=False, external_broker=True)
    with pytest.raises(Fatal) as failed:
        site.start()  # what `dmg up` prints as its one line
    assert "wrong CA" in str(failed.value) and "\n" not in str(failed.value)
    assert site.pid_of("cloud") is None  # nothing was started


def test_a_client_certificate_when_redis_asks_for_one(tmp_path: Path, ca: KeyPair) -> None:
    """``tls-auth-clients yes``: DMG_REDIS_TLS_CERT/KEY are sent; without them the handshake fails."""
    require_redis()
    root = tmp_path / "mtls"
    root.mkdir()
    files = SiteTLS(ca=root / "ca.pem", cert=root / "server.pem", key=root / "server-key.pem")
    write_pair(ca, files.ca, root / "ca-key.pem")
    write_pair(issue(ca, ("127.0.0.1",)), files.cert, files.key)
    write_pair(issue(ca, ("node1",)), root / "client.pem", root / "client-key.pem")
    server = EmbeddedRedis(root / "data", free_port(), password=PASSWORD, tls=files, appendonly=False,
                           extra_args=("--tls-auth-clients", "yes")).start()
    try:
        found = TlsRedis(server, files.ca, root)
        with_cert = redis_client(found.settings(redis_tls_cert=str(root / "client.pem"),
                                                redis_tls_key=str(root / "client-key.pem")), timeout=5)
        try:
            assert with_cert.ping()
        finally:
            with_cert.close()
        without = redis_client(found.settings(), timeout=5)
        try:
            with pytest.raises(BrokerError):
                without.ping()
        finally:
            without.close()
    finally:
        server.stop()
