"""The dispatcher lease on real Redis, in-process and across real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import redis as redis_lib

from dispatcher.lease import Lease
from dmg.procs import stop_process
from tests.workers.support import wait_for

ROOT = Path(__file__).resolve().parents[2]


def lease(client: redis_lib.Redis, holder: str, ttl: float = 5.0, **kwargs: object) -> Lease:
    return Lease(client, key="dmg:gw:lease", epoch_key="dmg:gw:epoch", holder=holder, ttl=ttl,
                 **kwargs)  # type: ignore[arg-type]


def test_of_two_candidates_exactly_one_wins(redis_client: redis_lib.Redis) -> None:
    a, b = lease(redis_client, "a"), lease(redis_client, "b")

    assert a.acquire() is True
    assert b.acquire() is False

    assert (a.holding(), b.holding()) == (True, False)
    assert a.epoch == 1 and b.epoch == 0
    assert a.current_holder() == b.current_holder() == "a"


def test_only_the_holder_can_renew_or_release(redis_client: redis_lib.Redis) -> None:
    a, b = lease(redis_client, "a"), lease(redis_client, "b")
    a.acquire()

    assert b.renew() is False
    assert b.release() is False
    assert a.current_holder() == "a"
    assert a.renew() is True
    assert a.release() is True
    assert a.holding() is False and a.current_holder() is None


def test_each_acquisition_gets_a_higher_epoch(redis_client: redis_lib.Redis) -> None:
    a, b = lease(redis_client, "a"), lease(redis_client, "b")
    a.acquire()
    a.release()
    assert b.acquire() is True
    assert b.epoch == 2
    b.release()
    assert a.acquire() is True and a.epoch == 3


def test_an_expired_holder_cannot_renew_once_another_took_over(redis_client: redis_lib.Redis) -> None:
    a, b = lease(redis_client, "a", ttl=0.3), lease(redis_client, "b", ttl=5.0)
    a.acquire()

    wait_for(b.acquire, timeout=10, what="b to take the expired lease")

    assert a.holding() is False
    assert a.renew() is False
    assert a.release() is False
    assert b.current_holder() == "b" and b.epoch > a.epoch


def test_a_holder_stops_trusting_its_lease_before_redis_expires_it(redis_client: redis_lib.Redis) -> None:
    now = [100.0]
    a = lease(redis_client, "a", ttl=5.0, clock=lambda: now[0])
    a.acquire()
    now[0] += 5.0 * 0.85  # past the safety margin, well before Redis drops the key

    assert a.holding() is False
    assert redis_client.exists("dmg:gw:lease") == 1
    assert a.renew() is True and a.holding() is True  # a renewal in time restores it


def test_a_killed_holder_process_is_replaced_with_a_higher_epoch(redis_url: str,
                                                                 redis_client: redis_lib.Redis) -> None:
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "tests.dispatcher.lease_candidate", redis_url, name, "1.0"],
            cwd=ROOT, stdin=subprocess.DEVNULL)
        for name in ("a", "b")
    }
    try:
        def acquired() -> dict[str, int]:
            return {k.decode(): int(v) for k, v in redis_client.hgetall("test:acquired").items()}

        first = wait_for(acquired, timeout=30, what="a candidate to win")
        (winner, epoch), = first.items()
        loser = "b" if winner == "a" else "a"
        # The winner keeps renewing while the loser keeps trying: no second acquisition.
        wait_for(lambda: int(redis_client.hget("test:renewals", winner) or 0) >= 12,
                 what="the winner to renew past twice its TTL")
        assert procs[loser].poll() is None and procs[winner].poll() is None
        assert acquired() == {winner: epoch}

        procs[winner].send_signal(signal.SIGKILL)
        procs[winner].wait(10)

        taken = wait_for(lambda: acquired().get(loser), timeout=30, what="the other candidate to take over")
        assert taken > epoch
        assert redis_client.get("dmg:gw:lease").decode().startswith(f"{loser}:")
    finally:
        for proc in procs.values():
            stop_process(proc, timeout=5)


def test_a_dead_holder_s_lease_is_broken_only_while_it_still_holds_it(redis_client: redis_lib.Redis) -> None:
    dead, standby, other = lease(redis_client, "a"), lease(redis_client, "b"), lease(redis_client, "c")
    assert dead.acquire()
    judged = standby.current_value()
    assert judged is not None and judged.startswith("a:")

    assert not standby.break_dead("a:some-older-token")  # not the value it holds now
    assert standby.break_dead(judged)
    assert standby.acquire() and standby.epoch == dead.epoch + 1
    assert not dead.renew()  # the broken holder cannot take it back
    assert not other.break_dead(judged)  # the new holder's lease is not the judged one
    assert not standby.break_dead(standby.current_value() or "")  # never its own
    assert standby.current_holder() == "b"
