"""A task result's text in its event (workers.resultrepr) is Celery's own, made faster.

Given values of every shape a task may return (a copy task's result, flat dicts with quotes,
newlines, non-ASCII text, booleans and None, long strings around the size limit, nested
values, non-dicts), then :func:`result_repr` writes exactly what Celery's ``saferepr`` writes,
with and without a size limit; and once a node's app is built, Celery's tracer uses it.
"""

from __future__ import annotations

from typing import Any

import pytest
from celery.app import trace
from celery.utils.saferepr import saferepr

from dmg.shards import ShardOutcome
from settings import Settings
from workers.app import make_app
from workers.resultrepr import result_repr

VALUES: list[Any] = [
    ShardOutcome("succeeded", "node1", 2, "ar1-00000", 3, 1024, "").task_result(),
    {},
    {"status": "stale", "node": "n-1", "attempt": 1, "files": 0, "bytes": 0},
    {"flag": True, "none": None, "negative": -5, "big": 10**20},
    {"quote": "it's"}, {"double": 'say "hi"'}, {"newline": "a\nb"}, {"tab": "a\tb"},
    {"backslash": "a\\b"}, {"é": "ü ☃"}, {"nul": "\x00"},
    {"long": "x" * 2000}, {"edge": "x" * 1014}, {"edge": "x" * 1015}, {"edge": "x" * 1016},
    {1: 2}, {"float": 1.5}, {"nested": {"a": [1, 2]}}, {"list": [1, "a"]}, {"bytes": b"ab"},
    [1, 2], ("a",), "text", 42, None,
]


@pytest.mark.parametrize("maxlen", [None, 1024, 10, 0])
@pytest.mark.parametrize("value", VALUES, ids=lambda v: repr(v)[:30])
def test_the_text_is_celery_s(value: Any, maxlen: int | None) -> None:
    assert result_repr(value, maxlen) == saferepr(value, maxlen)


def test_a_node_app_s_tracer_uses_it() -> None:
    make_app(Settings(redis_url="redis://127.0.0.1:1/0", gateway="gw"))
    assert trace.saferepr is result_repr
