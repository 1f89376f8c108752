"""The embedded broker's start returns once Redis answers commands, not once it listens:
after a restart with data, Redis listens while it still loads its AOF and answers every
command ``-LOADING`` meanwhile (seen as BusyLoadingError in a CI run of a test that
restarted its broker and read at once)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from dmg.embedded.redis import EmbeddedRedis
from dmg.procs import free_port
from tests.conftest import need_redis_binary

KEYS = 300_000


@pytest.mark.integration
@pytest.mark.parametrize("password", ["", "s3cret-pw"])
def test_a_restarted_broker_answers_at_once_when_start_returns(tmp_path: Path, password: str) -> None:
    need_redis_binary()
    # Given an embedded Redis (AOF on) holding 300,000 keys, stopped (SIGTERM: AOF written)
    server = EmbeddedRedis(tmp_path / "r", free_port(), password=password).start()
    try:
        client = redis.Redis.from_url(server.client_url(), socket_timeout=10)
        with client.pipeline(transaction=False) as pipe:
            for i in range(KEYS):
                pipe.set(f"k{i}", "v")
                if i % 10_000 == 9_999:
                    pipe.execute()
            pipe.execute()
        client.close()
        server.stop()
        # When it starts again, and a client with no retry reads as soon as start returns
        server.start()
        fresh = redis.Redis.from_url(server.client_url(), socket_timeout=10, retry_on_error=[])
        try:
            # Then it answers with every key, not -LOADING
            assert fresh.dbsize() == KEYS
        finally:
            fresh.close()
    finally:
        server.stop()
