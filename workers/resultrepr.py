"""The text of a task's result in its ``task-succeeded`` event, made without Celery's slow path.

After every task, Celery 5.7.0's tracer (``celery.app.trace``) writes the task's return
value as text with ``celery.utils.saferepr.saferepr`` (for the ``task-succeeded`` event that
Flower shows, and its own INFO line, which dmg keeps at DEBUG): a token-by-token walk in
Python, 3-4 % of a pool process's CPU per one-file shard by a GIL profile, for a copy
task's five-key dict (``{status, node, attempt, files, bytes}``).

:func:`result_repr` gives the same text: for a flat dict of plain keys and values, Python's
own ``repr`` (identical to ``saferepr``'s for those, as long as it fits in ``maxlen``);
anything else goes to ``saferepr`` unchanged. :func:`install` puts it in the tracer's place.
Remove once Celery makes that text cheaply itself.
"""

from __future__ import annotations

from typing import Any

from celery.app import trace
from celery.utils.saferepr import saferepr

__all__ = ["install", "result_repr"]


def _plain_text(value: str) -> bool:
    """A string whose ``repr`` is itself in single quotes, as ``saferepr`` writes it (which
    escapes neither newlines nor non-printable characters, and only ``'`` among quotes)."""
    return value.isprintable() and "'" not in value and "\\" not in value


def _plain(value: object) -> bool:
    kind = type(value)
    if kind is str:
        return _plain_text(value)  # type: ignore[arg-type]
    return kind is int or kind is bool or value is None


def result_repr(value: Any, maxlen: int | None = None, maxlevels: int = 3, seen: Any = None) -> str:
    """``saferepr(value, maxlen, maxlevels, seen)``, the same text, faster for a flat dict of
    plain strings, integers, booleans and None."""
    if type(value) is dict and all(type(k) is str and _plain_text(k) and _plain(v) for k, v in value.items()):
        text = repr(value)
        if maxlen is None or len(text) <= maxlen:
            return text
    return saferepr(value, maxlen, maxlevels, seen)


def install() -> None:
    """The tracer of every task of this process writes its results with :func:`result_repr`."""
    trace.saferepr = result_repr
