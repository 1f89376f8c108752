"""The site broker's error boundary (dmg.site.boundary), against a real Redis: redis-py's
errors come out as dmg.errors; the two redis-py uses as control flow still work."""

from __future__ import annotations

import pytest
import redis as redis_lib

from dmg.errors import BrokerError, BrokerRefused, BrokerUnreachable, DmgError
from dmg.procs import free_port
from dmg.site.connection import redis_client
from dmg.site.state import SiteState
from settings import Settings


def test_a_broker_that_is_not_there_raises_broker_unreachable_from_commands_and_pipelines() -> None:
    client = redis_client(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"), timeout=0.5)
    with pytest.raises(BrokerUnreachable, match=r"^the site broker is unreachable: ") as caught:
        client.get("k")
    assert isinstance(caught.value.__cause__, redis_lib.ConnectionError)
    assert "\n" not in str(caught.value) and not isinstance(caught.value, DmgError)
    pipe = client.pipeline(transaction=False)
    pipe.get("k")
    with pytest.raises(BrokerUnreachable):
        pipe.execute()


def test_an_error_reply_raises_broker_refused(redis_url: str) -> None:
    client = redis_client(Settings(redis_url=redis_url), timeout=2)
    client.set("text", "x")
    with pytest.raises(BrokerRefused, match="WRONGTYPE") as caught:
        client.lpush("text", 1)
    assert isinstance(caught.value, BrokerError)
    assert isinstance(caught.value.__cause__, redis_lib.ResponseError)
    pipe = client.pipeline()
    pipe.incr("text")
    with pytest.raises(BrokerRefused):
        pipe.execute()
    client.close()


def test_scripts_reload_and_watch_races_pass_through(redis_url: str) -> None:
    """NOSCRIPT (after SCRIPT FLUSH, as after a Redis restart) is redis-py's to handle; a
    lost WATCH race is end_heartbeat's: both still behave as without the boundary."""
    client = redis_client(Settings(redis_url=redis_url), timeout=2)
    state = SiteState(client, "gw")
    state.save_shard("s1", {})
    assert state.new_attempt("s1", "a") == 1
    client.script_flush()
    assert state.new_attempt("s1", "a") == 2  # reloaded, not a BrokerRefused
    state.publish_heartbeat("a", {"beat": 1}, ttl=30)
    with client.pipeline(transaction=True) as pipe:
        pipe.watch(state.keys.heartbeat("a"))
        client.set(state.keys.heartbeat("a"), "{}")  # a beat between the read and the delete
        pipe.multi()
        pipe.delete(state.keys.heartbeat("a"))
        with pytest.raises(redis_lib.WatchError):
            pipe.execute()
    assert state.end_heartbeat("a") is True
    client.close()
