"""The broker address (settings.redisurl), the Celery config derived from it, and the
client factory (dmg.site.connection) against a real Redis."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dmg.embedded.redis import EmbeddedRedis
from dmg.errors import BadInput, BrokerUnreachable
from dmg.procs import free_port
from dmg.site.connection import DeadlineRetry, redis_client
from settings import Settings, SettingsError, load
from settings.celery import celery_config
from settings.redisurl import parse_redis_url
from tests.conftest import need_redis_binary


def test_a_plain_url_is_kept_as_it_is() -> None:
    address = parse_redis_url("redis://:secret@10.0.0.5:6380/3")
    assert not address.is_sentinel
    assert address.canonical_url() == "redis://:secret@10.0.0.5:6380/3"


def test_a_sentinel_group_puts_db_and_password_on_every_entry() -> None:
    address = parse_redis_url("sentinel://:pw@h1:26379;sentinel://h2;sentinel://h3:26381/2")
    assert address.sentinels == (("h1", 26379), ("h2", 26379), ("h3", 26381))
    assert (address.db, address.password) == (2, "pw")
    assert address.canonical_url() == ("sentinel://:pw@h1:26379/2;sentinel://:pw@h2:26379/2;"
                                       "sentinel://:pw@h3:26381/2")


@pytest.mark.parametrize("url, message", [
    ("", "is empty"),
    ("http://h:1/0", "scheme 'http'"),
    ("sentinel://h1:1;redis://h2:2", "is not sentinel://host:port"),
    ("sentinel://h1:1/zero", "is not a number"),
    ("sentinel://h1:port", "is not a URL"),
    ("sentinel://:hunter2@h1:1;sentinel://h2:x", "is not a URL"),
])
def test_a_bad_broker_url_names_the_problem(url: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        parse_redis_url(url)
    assert "hunter2" not in str(caught.value)


def test_the_factory_refuses_a_bad_url_with_a_hint() -> None:
    with pytest.raises(BadInput, match="scheme 'http'") as caught:
        redis_client(Settings(redis_url="http://h:1/0"), timeout=1)
    assert "DMG_REDIS_URL" in (caught.value.hint or "")


def test_the_master_name_comes_from_the_environment() -> None:
    settings = load({"DMG_REDIS_URL": "sentinel://a:1;sentinel://b:2/0", "DMG_REDIS_MASTER_NAME": "site-a",
                     "DMG_DATA_DIR": "/nonexistent-dmg"})
    config = celery_config(settings)
    assert config["broker_url"] == config["result_backend"] == "sentinel://a:1/0;sentinel://b:2/0"
    assert config["broker_transport_options"]["master_name"] == "site-a"
    assert config["result_backend_transport_options"]["master_name"] == "site-a"


def test_celery_keeps_reconnecting_to_a_plain_redis(tmp_path: Path) -> None:
    # its own data dir: the checkout's .dmg (left by `make demo`) holds a password
    config = celery_config(Settings(redis_url="redis://127.0.0.1:6379/4", data_dir=tmp_path))
    assert config["broker_url"] == "redis://127.0.0.1:6379/4"
    assert config["broker_connection_retry"] is True and config["broker_connection_max_retries"] is None
    assert config["result_backend_always_retry"] is True
    options = config["broker_transport_options"]
    assert options["socket_keepalive"] and options["retry_on_timeout"] and options["health_check_interval"]
    assert "master_name" not in options and config["result_backend_transport_options"] == {}


@pytest.mark.integration
@pytest.mark.parametrize("keep_connection", [False, True])
def test_a_riding_client_waits_out_a_redis_restart(tmp_path: Path, keep_connection: bool) -> None:
    """Given a client with retry_for (pooled, or keeping one connection), when its Redis stops
    (SIGTERM, AOF) and starts again on the same port and dir, a command issued while it was
    down completes, with the data kept; a fail-fast client raises while it is down and works
    again after."""
    need_redis_binary()
    server = EmbeddedRedis(tmp_path / "r", free_port()).start()
    try:
        settings = Settings(redis_url=server.url)
        riding = redis_client(settings, timeout=1, retry_for=30, keep_connection=keep_connection)
        failing = redis_client(settings, timeout=1)
        riding.set("k", "before")
        server.stop()
        asked = threading.Event()
        answers: list[object] = []

        def ask() -> None:
            asked.set()
            answers.append(riding.get("k"))

        thread = threading.Thread(target=ask, daemon=True)
        thread.start()
        asked.wait(5)
        with pytest.raises(BrokerUnreachable):
            failing.get("k")
        assert thread.is_alive()  # still retrying
        server.start()
        thread.join(30)
        assert answers == [b"before"]
        assert failing.get("k") == b"before"
        riding.close()
        failing.close()
    finally:
        server.stop()


def test_a_deadline_retry_gives_up() -> None:
    """Nothing listens: a client with retry_for=1 raises instead of retrying N x N times."""
    client = redis_client(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"), timeout=0.5,
                          retry_for=1.0)
    assert isinstance(client.connection_pool.connection_kwargs["retry"], DeadlineRetry)
    with pytest.raises(BrokerUnreachable):
        client.ping()


def test_a_kept_connection_client_connects_at_its_first_command_and_keeps_that_connection(
        redis_url: str) -> None:
    """Given a client asked to keep its connection, when it is built, then it talks to nobody
    (nothing listens: no error until its first command, which raises BrokerUnreachable); when
    commands run, then they all go on the one connection the first took (no pool checkout),
    and when Redis drops that connection, the next command makes it again."""
    nowhere = redis_client(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"), timeout=0.5,
                           keep_connection=True)
    with pytest.raises(BrokerUnreachable):
        nowhere.ping()
    client = redis_client(Settings(redis_url=redis_url), timeout=5.0, retry_for=10.0, keep_connection=True)
    other = redis_client(Settings(redis_url=redis_url), timeout=5.0)
    try:
        assert client.connection is None  # built lazily
        first = client.client_id()
        kept = client.connection
        assert kept is not None
        for _ in range(5):
            assert client.client_id() == first and client.connection is kept
        other.client_kill_filter(_id=first)
        assert client.ping()
        assert client.client_id() != first and client.connection is kept  # made again, still the one
    finally:
        client.close()
        other.close()
        nowhere.close()


def test_only_the_building_thread_uses_the_kept_connection(redis_url: str) -> None:
    """Given a kept-connection client built on this thread, when 8 other threads (a large
    upload's parts, the held-report releaser) run commands beside this one's, then they take
    pooled connections, never the kept one (no thread waits for another's round trip), and
    every thread gets its own answers."""
    client = redis_client(Settings(redis_url=redis_url), timeout=5.0, keep_connection=True)
    kept_id = client.client_id()
    wrong: list[tuple[int, int, object]] = []
    seen_ids: set[int] = set()

    def work(n: int) -> None:
        seen_ids.add(client.client_id())
        for i in range(300):
            client.set(f"t{n}:{i}", f"{n}-{i}")
            got = client.get(f"t{n}:{i}")
            if got != f"{n}-{i}".encode():
                wrong.append((n, i, got))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    try:
        for thread in threads:
            thread.start()
        for _ in range(300):
            assert client.client_id() == kept_id
        for thread in threads:
            thread.join(30)
        assert wrong == [] and kept_id not in seen_ids
        assert client.dbsize() == 8 * 300
    finally:
        client.close()


def test_a_site_client_names_its_driver_without_looking_up_its_version(redis_url: str) -> None:
    """Given a site client, when it connects, then its connection carries redis-py's name and
    version as given (redis-py 8.1.0 would search importlib.metadata in every connection's
    __init__; Redis 7.2 and later show them in CLIENT INFO)."""
    import redis as redis_lib

    from dmg.site.connection import redis_client

    client = redis_client(Settings(redis_url=redis_url), timeout=5.0)
    try:
        assert client.ping()
        assert client.connection_pool.connection_kwargs["driver_info"].lib_version == redis_lib.__version__
        connection = client.connection_pool.get_connection()
        try:
            assert connection.driver_info is not None
            assert (connection.driver_info.name, connection.driver_info.lib_version) == (
                "redis-py", redis_lib.__version__)
        finally:
            client.connection_pool.release(connection)
    finally:
        client.close()
