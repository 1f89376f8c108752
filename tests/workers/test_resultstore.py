"""A node's Celery result backend stores a task's result in one Redis step (workers.resultstore),
against a real Redis.

Given a node's Celery app on a fresh Redis database, then:

- its backend is the one-step store for redis://, rediss:// and sentinel:// URLs;
- a stored result reads back as Celery's own store writes it (the same meta, extended
  fields, expiry), and ``AsyncResult.get`` waiting on it is woken (the PUBLISH);
- a later failure or duplicate of a task whose SUCCESS is stored does not overwrite it,
  as Celery's rule says; a stored failure is overwritten by a success;
- the app's clock (``date_done`` of every stored result) says what Celery's own says, in
  UTC and in a time zone with summer time;
- a copy task's SUCCESS stored by its attempt's last step (``finish_run`` with
  :class:`ResultWithTheEnd`'s entry) reads back as Celery's own store writes it, wakes a
  waiting get, never overwrites a stored SUCCESS, and leaves the task's request saying
  ``ignore_result`` (Celery does not store it again); an eager or ignored task's result is
  left to Celery.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import redis as redis_lib
from celery import Celery
from celery.backends.redis import RedisBackend

from dmg.shards import ShardOutcome
from dmg.site.attempts import STARTED, finish_run, start_run
from dmg.site.state import SiteState
from settings import Settings
from workers.app import make_app
from workers.resultstore import OneStepRedisBackend, OneStepSentinelBackend, ResultWithTheEnd

GATEWAY = "gw"


@pytest.fixture
def app(redis_url: str) -> Iterator[Celery]:
    celery_app = make_app(Settings(redis_url=redis_url, gateway=GATEWAY))
    yield celery_app
    celery_app.close()


def request(task_id: str) -> Any:
    """What Celery's extended result takes from a task's request."""
    return SimpleNamespace(id=task_id, task="dmg.copy_shard", args=["s-0", 1], kwargs={"epoch": 3},
                           hostname="n1@gw", retries=0, delivery_info={"routing_key": "node.n1"},
                           parent_id=None, root_id=task_id, ignore_result=False, is_eager=False, group=None,
                           chord=None, properties={}, stamps={}, errbacks=None, chain=None)


def stored(client: redis_lib.Redis, backend: Any, task_id: str) -> dict[str, Any]:
    return dict(json.loads(client.get(backend.get_key_for_task(task_id))))


def test_a_node_app_stores_results_in_one_step_for_each_redis_scheme() -> None:
    for url, expected in (("redis://127.0.0.1:1/0", OneStepRedisBackend),
                          ("rediss://127.0.0.1:1/0", OneStepRedisBackend),
                          ("sentinel://127.0.0.1:1/0;sentinel://127.0.0.1:2/0", OneStepSentinelBackend)):
        app = make_app(Settings(redis_url=url, gateway="gw"))
        assert type(app.backend) is expected, url


@pytest.mark.parametrize("zone", ["", "Europe/Paris", "America/New_York"])
def test_the_app_s_clock_says_what_celery_s_says(zone: str) -> None:
    app = make_app(Settings(redis_url="redis://127.0.0.1:1/0", gateway="gw"))
    if zone:
        app.conf.timezone = zone
    ours, celery_s = app.now(), Celery.now(app)
    assert ours.tzinfo is celery_s.tzinfo and ours.utcoffset() == celery_s.utcoffset()
    assert abs(ours - celery_s) < timedelta(seconds=5)
    assert ours.isoformat()[-6:] == celery_s.isoformat()[-6:]  # the same offset written
    assert datetime.fromisoformat(ours.isoformat()) == ours


def test_a_result_is_stored_as_celery_stores_it(app: Celery, redis_url: str) -> None:
    client = redis_lib.Redis.from_url(redis_url)
    stock = RedisBackend(app=app, url=redis_url)
    ours = app.backend
    result = {"status": "succeeded", "node": "n1", "files": 1}
    stock.mark_as_done("stock-1", result, request=request("stock-1"))
    ours.mark_as_done("ours-1", result, request=request("ours-1"))
    theirs, mine = stored(client, stock, "stock-1"), stored(client, ours, "ours-1")
    for meta in (theirs, mine):
        meta.pop("task_id")
        meta.pop("date_done")
    assert mine == theirs
    assert mine["name"] == "dmg.copy_shard" and mine["args"] == ["s-0", 1] and mine["worker"] == "n1@gw"
    ttl = client.ttl(ours.get_key_for_task("ours-1"))
    assert 0 < ttl <= app.conf.result_expires
    assert abs(ttl - client.ttl(stock.get_key_for_task("stock-1"))) <= 1
    assert app.AsyncResult("ours-1").get(timeout=5) == result


def test_a_waiting_get_is_woken_by_the_store(app: Celery) -> None:
    waiting = app.AsyncResult("late-1")
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(waiting.get(timeout=10)))
    reader.start()
    app.backend.mark_as_done("late-1", {"status": "succeeded"}, request=request("late-1"))
    reader.join(timeout=15)
    assert got == [{"status": "succeeded"}]


def test_a_stored_success_is_never_overwritten(app: Celery, redis_url: str) -> None:
    client = redis_lib.Redis.from_url(redis_url)
    backend = app.backend
    backend.mark_as_failure("t-1", RuntimeError("first try"), request=request("t-1"))
    assert stored(client, backend, "t-1")["status"] == "FAILURE"
    backend.mark_as_done("t-1", {"status": "succeeded"}, request=request("t-1"))  # a failure is replaced
    assert stored(client, backend, "t-1")["status"] == "SUCCESS"
    backend.mark_as_failure("t-1", RuntimeError("late duplicate"), request=request("t-1"))
    backend.mark_as_done("t-1", {"status": "duplicate"}, request=request("t-1"))
    meta = stored(client, backend, "t-1")
    assert meta["status"] == "SUCCESS" and meta["result"] == {"status": "succeeded"}


def started_attempt(state: SiteState, shard_id: str) -> int:
    state.save_shard(shard_id, {"shard_id": shard_id})
    attempt = state.new_attempt(shard_id, "n1")
    assert start_run(state, shard_id, attempt, "n1", runner="w", alive=lambda _t: False)[0] == STARTED
    return attempt


def copy_task(app: Celery, task_id: str, **request_fields: Any) -> Any:
    """What ResultWithTheEnd reads of a running copy task: its request and backend."""
    req = request(task_id)
    for name, value in request_fields.items():
        setattr(req, name, value)
    return SimpleNamespace(request=req, backend=app.backend, ignore_result=False)


def test_a_copy_task_s_success_is_stored_with_its_attempt_s_end(app: Celery, redis_url: str,
                                                                  state: SiteState) -> None:
    client = redis_lib.Redis.from_url(redis_url)
    stock = RedisBackend(app=app, url=redis_url)
    attempt = started_attempt(state, "s-0")
    outcome = ShardOutcome("succeeded", "n1", attempt, "s-0", files=1, bytes=5)
    stock.mark_as_done("stock-2", outcome.task_result(), request=request("stock-2"))
    waiting = app.AsyncResult("ours-2")
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(waiting.get(timeout=10)))
    reader.start()

    task = copy_task(app, "ours-2")
    final = ResultWithTheEnd(task)
    finish_run(state, "s-0", attempt, "n1", ok=True, result=final.entry(outcome))
    final.stored()

    reader.join(timeout=15)
    assert got == [outcome.task_result()]
    theirs, mine = stored(client, stock, "stock-2"), stored(client, app.backend, "ours-2")
    for meta in (theirs, mine):
        meta.pop("task_id")
        meta.pop("date_done")
    assert mine == theirs
    ttl = client.ttl(app.backend.get_key_for_task("ours-2"))
    assert 0 < ttl <= app.conf.result_expires
    assert client.hget(state.keys.shard("s-0"), "state") == b"done"
    assert task.request.ignore_result is True  # Celery's trace does not store it again


def test_the_end_s_store_never_overwrites_a_stored_success(app: Celery, redis_url: str,
                                                           state: SiteState) -> None:
    client = redis_lib.Redis.from_url(redis_url)
    app.backend.mark_as_done("t-3", {"status": "succeeded", "files": 7}, request=request("t-3"))
    attempt = started_attempt(state, "s-1")
    late = ResultWithTheEnd(copy_task(app, "t-3")).entry(ShardOutcome("succeeded", "n1", attempt, "s-1"))

    finish_run(state, "s-1", attempt, "n1", ok=True, result=late)

    assert stored(client, app.backend, "t-3")["result"] == {"status": "succeeded", "files": 7}
    assert client.hget(state.keys.shard("s-1"), "state") == b"done"


def test_an_eager_or_ignored_task_s_result_is_left_to_celery(app: Celery) -> None:
    outcome = ShardOutcome("succeeded", "n1", 1, "s-2")
    assert ResultWithTheEnd(copy_task(app, "e-1", is_eager=True)).entry(outcome) is None
    assert ResultWithTheEnd(copy_task(app, "e-2", ignore_result=True)).entry(outcome) is None
    assert ResultWithTheEnd(copy_task(app, "e-3")).entry(outcome) is not None
