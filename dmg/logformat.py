"""How every dmg process writes its log: text (the default) or JSON lines.

``DMG_LOG_FORMAT=json`` makes the cloud, a node (its agent and dispatcher), and its
Celery worker write one JSON object per line to stderr::

    {"time": "2026-12-03T10:00:00.123Z", "level": "INFO", "logger": "workers.run.attempt",
     "message": "shard succeeded shard=ar1-00000 attempt=1 node=n1 ...", "pid": 4242,
     "node": "n1", "gateway": "site", "activity_run": "ar1", "shard": "ar1-00000", "attempt": "1"}

The fields after ``pid`` are there where known, first found wins:

1. the context bound around the work (:func:`bind`, :func:`log_context`: a worker binds
   shard, attempt and activity run for the task it runs);
2. the process's own (:func:`configure`: the node and gateway a node's processes run
   for; so in a node's log ``node`` is always that node);
3. the ``key=value`` words of the message itself (dmg's log lines carry
   ``node=``, ``run=``, ``activity_run=``, ``shard=``, ``attempt=``, ``epoch=``), and a
   Celery task id ``[<shard>:<attempt>]`` (in the cloud's log, ``node`` is the node a
   line is about).

A record with an exception has ``exception`` (its traceback as text).

Secrets never reach a line, in either format: the values handed to
:func:`hide_in_logs` (the process's tokens and passwords at :func:`configure`, each
store credential when it is opened) are blanked out (``***``) of the message and the
traceback, with the rule :func:`dmg.redaction.redact_values` (shared with the error
messages of the connectors).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any

from dmg.redaction import redact_values

TEXT = "text"
JSON = "json"
FORMATS = (TEXT, JSON)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: The fields a line may carry besides time, level, logger, message and pid.
FIELDS = ("node", "gateway", "run", "activity_run", "shard", "attempt", "epoch")

_WORDS = re.compile(r"\b(" + "|".join(FIELDS) + r")=([^\s,;:()\[\]]+)")
_TASK_ID = re.compile(r"\[(?P<shard>[\w.-]+-\d{5}):(?P<attempt>\d+)\]")

_NOTHING: Mapping[str, str] = MappingProxyType({})
_context: ContextVar[Mapping[str, str]] = ContextVar("dmg_log_context", default=_NOTHING)
_process_fields: dict[str, str] = {}
_secrets: set[str] = set()
_secrets_lock = threading.Lock()


class LogFormatError(ValueError):
    """``DMG_LOG_FORMAT`` names no format; the message says which exist."""


def hide_in_logs(values: Iterable[str]) -> None:
    """Blank ``values`` out of every later log line of this process (values shorter
    than :data:`dmg.redaction.MIN_SECRET` are left: they would mangle words)."""
    with _secrets_lock:
        _secrets.update(v for v in values if v)


def redact(text: str) -> str:
    """``text`` without any value handed to :func:`hide_in_logs`."""
    with _secrets_lock:
        hidden = tuple(_secrets)
    return redact_values(text, hidden) if hidden else text


def bind(**fields: object) -> Token[Mapping[str, str]]:
    """Add ``fields`` to every line logged in this context until :func:`unbind`."""
    extra = {k: str(v) for k, v in fields.items() if v is not None and v != ""}
    return _context.set({**_context.get(), **extra})


def unbind(token: Token[Mapping[str, str]]) -> None:
    _context.reset(token)


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """:func:`bind` ``fields`` for the ``with`` block."""
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


def shard_fields(shard_id: str, attempt: object) -> dict[str, str]:
    """The fields of a shard's attempt: shard, attempt and its activity run (:mod:`dmg.ids`)."""
    activity_run, dash, index = shard_id.rpartition("-")
    fields = {"shard": shard_id, "attempt": str(attempt)}
    if dash and activity_run and index.isdigit():
        fields["activity_run"] = activity_run
    return fields


def line_fields(message: str) -> dict[str, str]:
    """The fields a message names: its ``key=value`` words and a ``[<shard>:<attempt>]`` task id."""
    found: dict[str, str] = {}
    task = _TASK_ID.search(message)
    if task:
        found.update(shard_fields(task["shard"], task["attempt"]))
    for key, value in _WORDS.findall(message):
        found.setdefault(key, value)
    if "shard" in found and "activity_run" not in found:
        found.update({k: v for k, v in shard_fields(found["shard"], "").items() if k == "activity_run"})
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        message = redact(record.getMessage())
        body: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "message": message, "pid": record.process,
        }
        fields = {**line_fields(message), **_process_fields, **_context.get()}
        body.update((k, fields[k]) for k in FIELDS if k in fields)
        if record.exc_info:
            body["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            body["exception"] = redact(record.exc_text)
        return json.dumps(body, ensure_ascii=False, default=str)


class RedactingFormatter(logging.Formatter):
    """Any formatter's text, secrets blanked out (the ``text`` format)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


def check_format(name: str) -> str:
    """``name`` lowered if it is a format, else :class:`LogFormatError`."""
    chosen = (name or TEXT).strip().lower()
    if chosen not in FORMATS:
        raise LogFormatError(f"DMG_LOG_FORMAT={name!r} is not a log format; use text or json")
    return chosen


def formatter(name: str, *, text: logging.Formatter | None = None) -> logging.Formatter:
    """The formatter of format ``name``; ``text`` is the one to keep (redacted) for text."""
    if check_format(name) == JSON:
        return JsonFormatter()
    if isinstance(text, RedactingFormatter):
        return text
    return RedactingFormatter(text or logging.Formatter(TEXT_FORMAT))


def use_format(logger: logging.Logger, name: str) -> None:
    """Make every handler of ``logger`` write format ``name`` (for loggers set up by
    others: Celery's worker and task loggers)."""
    for handler in logger.handlers:
        handler.setFormatter(formatter(name, text=handler.formatter))


def configure_fields(fields: Mapping[str, str]) -> None:
    """Put ``fields`` (those of :data:`FIELDS`, non-empty) on every line of this process."""
    _process_fields.update({k: v for k, v in fields.items() if v and k in FIELDS})


def configure(*, level: int | str, log_format: str, fields: Mapping[str, str] | None = None,
              secrets: Iterable[str] = ()) -> None:
    """Log to stderr at ``level`` in ``log_format`` (LogFormatError if it is none);
    ``fields`` (node, gateway) go on every line of this process, ``secrets`` on none."""
    chosen = check_format(log_format)
    hide_in_logs(secrets)
    configure_fields(fields or {})
    root = logging.getLogger()
    fresh = not root.handlers
    logging.basicConfig(level=level, format=TEXT_FORMAT, stream=sys.stderr)
    if fresh:  # ours: a handler someone else installed (pytest's) keeps its format
        use_format(root, chosen)
    if chosen == JSON:
        logging.captureWarnings(True)  # a Python warning is a log line too, not text on stderr


def warnings_as_lines(log_format: str) -> None:
    """Before logging is set up (a Celery worker warns before it sets up its loggers):
    Python warnings go to stderr as lines of ``log_format``."""
    if check_format(log_format) != JSON:
        return
    logging.captureWarnings(True)
    warnings_logger = logging.getLogger("py.warnings")
    if not warnings_logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        warnings_logger.addHandler(handler)
        warnings_logger.propagate = False
