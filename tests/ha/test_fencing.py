"""Fencing of shard attempts and dispatcher epochs, on a real Redis.

Given shards in the site state, when deliveries, dispatchers, nodes and the CLI
act on them concurrently or late, then an attempt starts only while it is
current, unfinished and not already running in a live process; a superseded
dispatcher can neither make an attempt nor move one; and the local lease deadline
ends before Redis can expire the key, with room for a slow clock.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as redis_lib
from celery import Celery

from dispatcher.lease import Lease
from dispatcher.placement import Placer, node_loads
from dmg.connectors.file import STAGING_PREFIX
from dmg.shards.status import STATE_QUEUED
from dmg.site.attempts import DUPLICATE, STALE, STARTED, reissue, requeue, runner_token, start_run
from dmg.site.state import SiteState
from tests.shardkit import planned_spec
from tests.workers.support import wait_for, write_files
from workers.run.delivery import my_runner, runner_alive

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

S = "ar1-00000"


def dead_runner() -> str:
    """The token of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    token = runner_token(proc.pid, time.time())
    proc.wait(10)
    return token


def beat(state: SiteState, node: str, limit: int = 2) -> None:
    state.publish_heartbeat(node, {"node": node, "limit": limit}, ttl=30)


def add(state: SiteState, *ids: str) -> None:
    for shard_id in ids:
        state.save_shard(shard_id, planned_spec(shard_id))


# -- starting a delivery -------------------------------------------------------------------
def test_a_live_execution_makes_a_redelivery_a_duplicate(state: SiteState) -> None:
    add(state, S)
    attempt = state.new_attempt(S, "a")
    assert start_run(state, S, attempt, "a", runner=my_runner(), alive=runner_alive) == (STARTED, 1)

    # The broker hands the message out again (visibility timeout) while this process runs it.
    again = start_run(state, S, attempt, "a", runner=dead_runner(), alive=runner_alive)

    assert again == (DUPLICATE, 0)
    shard = state.shard(S)
    assert shard is not None and shard["deliveries"] == 1 and shard["duplicates"] == 1
    assert shard["runner"] == my_runner() and state.running("a") == {S}


def test_a_dead_execution_lets_the_attempt_start_again_and_counts_it(state: SiteState) -> None:
    add(state, S)
    attempt = state.new_attempt(S, "a")
    for expected in (1, 2, 3):
        # Each execution's process dies (OOM): the next delivery of the same attempt starts.
        begun = start_run(state, S, attempt, "a", runner=dead_runner(), alive=runner_alive)
        assert begun == (STARTED, expected)
    assert state.started("a") == {f"{S}.{attempt}"}


def test_a_redelivery_of_a_finished_attempt_is_stale(state: SiteState) -> None:
    add(state, S)
    attempt = state.new_attempt(S, "a")
    start_run(state, S, attempt, "a", runner=my_runner(), alive=runner_alive)
    state.mark_finished(S, attempt, "a", ok=True)

    assert start_run(state, S, attempt, "a", runner=dead_runner(), alive=runner_alive) == (STALE, 0)
    assert start_run(state, S, attempt, "a", runner="w", alive=lambda _t: False)[0] == STALE
    assert state.started("a") == set() and state.running("a") == set()


def test_a_message_from_another_epoch_or_for_an_older_attempt_is_stale(state: SiteState) -> None:
    add(state, S)
    state.redis.set(state.keys.epoch, 7)
    old = state.new_attempt(S, "a", epoch=7)
    current = state.new_attempt(S, "a", epoch=7)

    assert start_run(state, S, old, "a", runner=my_runner(), alive=runner_alive, epoch=7)[0] == STALE
    assert start_run(state, S, current, "a", runner=my_runner(), alive=runner_alive, epoch=6)[0] == STALE
    assert start_run(state, S, current, "a", runner=my_runner(), alive=runner_alive, epoch=7)[0] == STARTED


# -- dispatcher epochs ---------------------------------------------------------------------
def test_a_superseded_dispatcher_can_make_no_attempt(state: SiteState, sender: Celery,
                                                     redis_client: redis_lib.Redis) -> None:
    beat(state, "a")
    add(state, S)
    state.push_pending(S)
    state.redis.set(state.keys.epoch, 5)  # a newer dispatcher took the lease (epoch 5)
    old = Placer(state=state, sender=sender, cloud=None, holding=lambda: True, max_queued=0,
                 epoch=lambda: 4)

    assert old.place_pending() == []
    assert state.pending() == [S] and state.shard(S)["attempt"] == 0  # type: ignore[index]
    assert state.redis.llen(state.keys.celery("node.a")) == 0  # nothing sent

    new = Placer(state=state, sender=sender, cloud=None, holding=lambda: True, max_queued=0,
                 epoch=lambda: 5)
    (placed,) = new.place_pending()
    assert (placed.node, placed.attempt) == ("a", 1)
    assert state.shard(S)["epoch"] == 5  # type: ignore[index]
    assert state.redis.llen(state.keys.celery("node.a")) == 1


def test_a_duplicate_pending_entry_is_never_placed_twice(state: SiteState, sender: Celery,
                                                         redis_client: redis_lib.Redis) -> None:
    beat(state, "a", limit=4)
    add(state, S)
    state.push_pending(S, S)  # two dispatchers both pushed the plan

    placer = Placer(state=state, sender=sender, cloud=None, holding=lambda: True, max_queued=0)
    placed = placer.place_pending() + placer.place_pending()

    assert [(p.shard_id, p.attempt) for p in placed] == [(S, 1)]
    assert state.pending() == [] and state.redis.llen(state.keys.celery("node.a")) == 1


def test_a_drained_node_gets_no_new_shard(state: SiteState, sender: Celery) -> None:
    beat(state, "a", limit=4)
    beat(state, "b", limit=1)
    add(state, "s1", "s2")
    state.push_pending("s1", "s2")
    state.set_drain("a")

    placer = Placer(state=state, sender=sender, cloud=None, holding=lambda: True, max_queued=0)
    placed = placer.place_pending()

    assert [p.node for p in placed] == ["b"]
    assert {n.name: n.draining for n in node_loads(state)} == {"a": True, "b": False}
    assert state.clear_drain("a") and not state.clear_drain("a")


# -- moving shards ------------------------------------------------------------------------
def test_requeue_fences_and_puts_the_shard_first_in_pending(state: SiteState) -> None:
    add(state, S, "other")
    state.push_pending("other")
    attempt = state.new_attempt(S, "a")
    start_run(state, S, attempt, "a", runner=my_runner(), alive=runner_alive)

    assert requeue(state, S, "b") == 0  # not on b: nothing to do
    new = requeue(state, S, "a")

    assert new == attempt + 1 and not state.is_current(S, attempt)
    assert state.pending() == [S, "other"]
    assert state.running("a") == set()
    shard = state.shard(S)
    assert shard is not None and (shard["node"], shard["state"], shard["deliveries"]) == ("", "pending", 0)
    assert requeue(state, S, "a") == 0  # idempotent
    state.redis.set(state.keys.epoch, 3)
    assert requeue(state, "other", "a", epoch=2) == -1  # a superseded dispatcher moves nothing


def test_reissue_gives_a_queued_shard_a_new_attempt_unless_it_started(state: SiteState) -> None:
    add(state, S, "s2")
    state.redis.set(state.keys.epoch, 2)
    first = state.new_attempt(S, "a", epoch=1 + 1)
    started = state.new_attempt("s2", "a", epoch=2)
    start_run(state, "s2", started, "a", runner=my_runner(), alive=runner_alive)

    assert reissue(state, S, "a", attempt=first, epoch=3) == -1
    state.redis.set(state.keys.epoch, 3)
    assert reissue(state, S, "a", attempt=first, epoch=3) == first + 1
    assert reissue(state, "s2", "a", attempt=started, epoch=3) == 0  # running: left alone
    shard = state.shard(S)
    assert shard is not None and (shard["node"], shard["state"], shard["epoch"]) == ("a", STATE_QUEUED, 3)
    assert state.queued("a") == {S}


# -- the lease ------------------------------------------------------------------------------
def test_the_local_lease_deadline_ends_a_safety_margin_before_redis_expiry(
        redis_client: redis_lib.Redis) -> None:
    lease = Lease(redis_client, key="dmg:gw:lease", epoch_key="dmg:gw:epoch", holder="a", ttl=6.0)
    assert lease.acquire()
    local_left = lease._valid_until - time.monotonic()
    redis_left = redis_client.pttl("dmg:gw:lease") / 1000

    assert local_left <= redis_left - lease.safety * lease.ttl + 0.01
    assert lease.safety * lease.ttl >= 1.0  # the default 6 s lease keeps 1.2 s for drift and pauses


def test_a_holder_whose_clock_runs_slow_still_stops_before_redis_expires_the_key(
        redis_client: redis_lib.Redis) -> None:
    start = time.monotonic()
    slow = lambda: start + (time.monotonic() - start) * 0.85  # noqa: E731 - 15 % slower than real time
    lease = Lease(redis_client, key="dmg:gw:lease", epoch_key="dmg:gw:epoch", holder="a", ttl=1.0,
                  clock=slow)
    assert lease.acquire()
    wait_for(lambda: not lease.holding(), timeout=10, interval=0.005, what="the lease to lapse")

    assert redis_client.pttl("dmg:gw:lease") > 0  # nobody else could have the lease yet


# -- a batch of small files, paused before its check ---------------------------------------
@pytest.mark.parametrize("copier", ["inline", "pool"])
def test_a_paused_attempt_moved_away_commits_nothing_of_its_batch(state: SiteState, redis_url: str,
                                                                    tmp_path: Path, copier: str) -> None:
    """Given a process copying 200 small files in batches of 64 with one fencing check
    per batch — in its calling thread (both folders on a local file system) or in a copy
    thread (its mount table says the folders are on an NFS share) — when it is SIGSTOPped
    right before the second batch's check and its shard is moved to another node
    meanwhile, then after SIGCONT the check sees the attempt fenced: the first batch
    stays, nothing of the second becomes visible, no staging file is left, and the
    process ends stale."""
    src, dst, log = tmp_path / "src", tmp_path / "dst", tmp_path / "checks.log"
    write_files(src, {f"f{i:03d}": 4096 for i in range(200)})
    extra: list[str] = []
    if copier == "pool":
        table = tmp_path / "mountinfo"
        table.write_text(f"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
                         f"90 1 0:50 / {tmp_path} rw,relatime - nfs4 server:/export rw,vers=4.2\n")
        extra = [str(table)]
    dst.mkdir()
    add(state, S)
    attempt = state.new_attempt(S, "a")
    assert start_run(state, S, attempt, "a", runner=my_runner(), alive=runner_alive)[0] == STARTED
    proc = subprocess.Popen([sys.executable, "-m", "tests.ha.batch_child", redis_url, "gw", S, str(attempt),
                             str(src), str(dst), str(log), *extra], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: log.exists() and "check 2\n" in log.read_text(), timeout=60,
                 what="the second batch staged", interval=0.01)
        proc.send_signal(signal.SIGSTOP)
        assert "checked 2" not in log.read_text()  # stopped inside the round trip, before the answer
        visible = sorted(p.name for p in dst.iterdir() if not p.name.startswith(STAGING_PREFIX))
        assert len(visible) == 64  # the first batch, whole
        staged = [p for p in dst.iterdir() if p.name.startswith(STAGING_PREFIX)]
        assert len(staged) == 64  # the second batch, staged

        assert requeue(state, S, "a") == attempt + 1  # the dispatcher moves the shard: attempt fenced

        proc.send_signal(signal.SIGCONT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    outcome = json.loads(out.strip().splitlines()[-1])
    assert outcome["outcome"] == "stale"
    if copier == "inline":
        assert outcome["threads"] == ["MainThread"]
    else:
        assert outcome["threads"] and all(t.startswith("dmg-copy") for t in outcome["threads"])
    assert "checked 2 False" in log.read_text()
    assert sorted(p.name for p in dst.iterdir()) == visible  # nothing more, no staging left
