"""Shared fixtures: real servers on 127.0.0.1, started by the tests.

Under ``CI=true`` a server that cannot start fails the test; elsewhere it skips.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from celery import Celery

from dmg.embedded.redis import EmbeddedRedis, redis_binary
from dmg.errors import Fatal
from dmg.procs import free_port
from dmg.site.boundary import SiteRedis
from dmg.site.state import SiteState
from settings import Settings

ON_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, why: str) -> None:
    """Skip locally, fail on CI, when a real server is missing."""
    if condition:
        return
    if ON_CI:
        pytest.fail(f"required server missing on CI: {why}")
    pytest.skip(why)


def need_redis_binary() -> None:
    """Skip locally, fail on CI, when no redis-server can be found."""
    try:
        redis_binary()
    except Fatal as exc:
        require(False, str(exc))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    need_redis_binary()
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of the test's own (a broker it may stop and restart), stopped after it."""
    need_redis_binary()
    server = EmbeddedRedis(tmp_path / "redis", free_port()).start()
    try:
        yield server
    finally:
        server.stop()


_databases = itertools.cycle(range(1, 16))


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """A fresh, empty Redis database (1..15) on the session's server."""
    db = next(_databases)
    url = f"redis://{redis_server.host}:{redis_server.port}/{db}"
    client = redis_lib.Redis.from_url(url)
    client.flushdb()
    client.close()
    yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis_lib.Redis]:
    client = SiteRedis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def state(redis_client: redis_lib.Redis) -> SiteState:
    """The site state of gateway "gw" on a fresh Redis database."""
    return SiteState(redis_client, "gw")


@pytest.fixture
def sender(redis_url: str) -> Iterator[Celery]:
    """A Celery app that sends tasks by name to the test's Redis (as the dispatcher does)."""
    from dispatcher.loop import make_sender

    app = make_sender(Settings(redis_url=redis_url, gateway="gw"))  # the `state` fixture's gateway
    yield app
    app.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "dmg-data"
    path.mkdir()
    return path
