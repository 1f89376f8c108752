"""Fixtures of the worker tests: the S3 server (moto) for part shards to S3, and a real
Redis broker of a test's own."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from dmg.embedded.redis import EmbeddedRedis, redis_binary
from dmg.errors import Fatal
from dmg.procs import free_port
from tests.conftest import require
from tests.servers.s3 import s3_bucket, s3_server  # noqa: F401


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of the test's own (the Celery broker), stopped after it."""
    try:
        redis_binary()
    except Fatal as exc:
        require(False, str(exc))
    server = EmbeddedRedis(tmp_path / "redis", free_port()).start()
    try:
        yield server
    finally:
        server.stop()
