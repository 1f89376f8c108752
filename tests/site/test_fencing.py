"""The fencing rule's pieces: is_current against a real Redis, and the shared check
(as strict as one check per file, fewer round trips)."""

from __future__ import annotations

import threading

import pytest

from dmg.site.attempts import requeue
from dmg.site.fencing import SharedCheck, is_current
from dmg.site.state import SiteState
from tests.waiting import wait_for


def test_a_caller_never_gets_the_answer_of_a_check_begun_before_it_asked() -> None:
    first_running, release_first = threading.Event(), threading.Event()
    answers = iter([True, False])  # the attempt is fenced while the first check runs
    calls = 0

    def check() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            first_running.set()
            release_first.wait(10)
        return next(answers)

    shared = SharedCheck(check)
    results: dict[str, bool] = {}
    early = threading.Thread(target=lambda: results.__setitem__("early", shared()))
    early.start()
    assert first_running.wait(10)
    late = [threading.Thread(target=lambda i=i: results.__setitem__(f"late{i}", shared())) for i in range(3)]
    for thread in late:
        thread.start()
    # the three late callers are waiting on the first check
    wait_for(lambda: len(shared._cond._waiters) >= 3, timeout=10, interval=0.001,  # type: ignore[attr-defined]
             what="three callers waiting")
    release_first.set()
    for thread in [early, *late]:
        thread.join(10)

    assert results["early"] is True
    assert [results[f"late{i}"] for i in range(3)] == [False, False, False]  # all saw the fence
    assert calls == 2  # the three late callers shared one check


def test_a_failing_check_raises_in_every_caller_that_waited_for_it() -> None:
    def check() -> bool:
        raise ConnectionError("broker unreachable")

    shared = SharedCheck(check)
    with pytest.raises(ConnectionError):
        shared()
    with pytest.raises(ConnectionError):  # and the next call checks again
        shared()


def test_only_the_newest_attempt_is_current(state: SiteState) -> None:
    assert not is_current(state.redis, state.keys, "s1", 0)  # no record: nothing is current
    state.save_shard("s1", {})
    first = state.new_attempt("s1", "a")
    assert is_current(state.redis, state.keys, "s1", first)
    second = requeue(state, "s1", "a")
    assert second == first + 1
    assert not is_current(state.redis, state.keys, "s1", first)  # fenced off by the hand-back
    assert state.is_current("s1", second) and not state.is_current("s1", second + 1)
