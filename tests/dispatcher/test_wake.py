"""The placement loop sleeps until a slot frees or work arrives."""

from __future__ import annotations

import json
import threading

import redis

from dmg.site.attempts import STARTED, finish_run, start_run
from dmg.site.plans import QUEUED, record_plan
from dmg.site.state import SiteState


def test_finishing_a_shard_wakes_the_dispatcher(redis_client: redis.Redis) -> None:
    state = SiteState(redis_client, "gw")
    state.save_shard("s1", {"shard_id": "s1"})
    attempt = state.new_attempt("s1", "n1")
    assert start_run(state, "s1", attempt, "n1", runner="w", alive=lambda _t: False)[0] == STARTED
    assert state.wait_for_change(0.01) is False  # nothing happened yet

    woken: list[bool] = []
    waiter = threading.Thread(target=lambda: woken.append(state.wait_for_change(30)))
    waiter.start()
    state.mark_finished("s1", attempt, "n1", ok=True)
    waiter.join(30)
    assert woken == [True]
    assert state.wait_for_change(0.01) is False  # the wake-up was consumed


def test_new_pending_work_wakes_the_dispatcher(redis_client: redis.Redis) -> None:
    state = SiteState(redis_client, "gw")
    state.push_pending("a", "b")
    assert state.wait_for_change(5) is True
    assert state.pending() == ["a", "b"]


def test_the_wake_list_keeps_one_entry_however_many_wake_it(redis_client: redis.Redis) -> None:
    # Given two plans recorded and two shards ended while the dispatcher was busy
    state = SiteState(redis_client, "gw")
    for run in ("ar1", "ar2"):
        shard_id = f"{run}-00000"
        assert record_plan(state, run, plan_json="[]", ttl=60, report_entry="{}",
                           shards=[(shard_id, json.dumps({"shard_id": shard_id}))]) == QUEUED
        attempt = state.new_attempt(shard_id, "n1")
        assert start_run(state, shard_id, attempt, "n1", runner="w", alive=lambda _t: False)[0] == STARTED
        finish_run(state, shard_id, attempt, "n1", ok=True)

    # Then one wake-up waits (one placement round), and it is consumed by one wait
    assert redis_client.llen(state.keys.wake) == 1
    assert state.wait_for_change(0.01) is True
    assert state.wait_for_change(0.01) is False
