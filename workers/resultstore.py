"""Celery's Redis result backend storing a task's result in one round trip, not two.

Celery 5.7.0 (``BaseKeyValueStoreBackend._store_result``) reads a task's stored result
before it writes the new one, so that a late duplicate never overwrites a ``SUCCESS``
(a GET, then a SETEX and PUBLISH): two round trips per task in every pool process, about
15 % of a node's pool CPU by a GIL profile. :class:`OneStepStore` keeps that rule and
the stored value (the same JSON meta, ``result_extended`` fields and all, the same
expiry, the same PUBLISH for a waiting ``AsyncResult.get``) but checks and writes inside
one Lua script. Nothing else changes: reading results, Flower (which shows tasks from
their events, not from this store), retries (Celery's ``result_backend_always_retry``).
A copy task's SUCCESS goes further: :class:`ResultWithTheEnd` has it stored by the
attempt's own last Redis step (:func:`dmg.site.attempts.finish_run`), with the same value
and rule (the Lua is one, :data:`dmg.site.scripts.STORE_RESULT`).

:data:`BACKENDS` maps the URL schemes to the classes; :func:`workers.app.make_app` puts it
in the app loader's ``override_backends``, so ``result_backend`` stays the broker's URL.
Remove once Celery stores without the read.
"""

from __future__ import annotations

from typing import Any

from celery import states
from celery.backends.base import BackendStoreError
from celery.backends.redis import RedisBackend, SentinelBackend
from kombu.utils.encoding import bytes_to_str

from dmg.shards import ShardOutcome
from dmg.site.attempts import TaskResult
from dmg.site.scripts import STORE_RESULT

# KEYS: the task's result key. ARGV: the encoded meta, seconds to keep it (0: forever).
# -> 0 when a stored SUCCESS was kept, 1 when written.
STORE_UNLESS_SUCCEEDED = STORE_RESULT + "return store_result(KEYS[1], ARGV[1], ARGV[2])"


class OneStepStore:
    """Mixin for Celery's Redis backends: :meth:`_store_result` in one script (see the module
    docstring)."""

    _store_script: Any = None
    _store_script_client: Any = None

    def _store_result(self, task_id: str, result: Any, state: str, traceback: Any = None,
                      request: Any = None, **_kwargs: Any) -> Any:
        backend: Any = self
        key, value, _keep = self.stored_value(task_id, result, state, traceback=traceback, request=request)
        backend.ensure(self._store_unless_succeeded, (key, value))
        return result

    def stored_value(self, task_id: str, result: Any, state: str, *, traceback: Any = None,
                     request: Any = None) -> TaskResult:
        """``(key, value, seconds to keep)`` of the task's result as Celery stores it (its meta,
        ``result_extended`` fields and all, encoded). Raises BackendStoreError when too large."""
        backend: Any = self
        meta = backend._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        value = backend.encode(meta)
        if isinstance(value, str) and len(value) > backend._MAX_STR_VALUE_SIZE:
            raise BackendStoreError("value too large for Redis backend", state=state, task_id=task_id)
        return bytes_to_str(backend.get_key_for_task(task_id)), value, int(backend.expires or 0)

    def _store_unless_succeeded(self, key: str, value: Any) -> int:
        backend: Any = self
        client = backend.client
        if self._store_script is None or self._store_script_client is not client:
            self._store_script = client.register_script(STORE_UNLESS_SUCCEEDED)
            self._store_script_client = client
        expires = int(backend.expires or 0)
        return int(self._store_script(keys=[key], args=[value, expires]))


class ResultWithTheEnd:
    """A copy task's SUCCESS result stored in its attempt's last Redis step (a
    :class:`workers.run.attempt.FinalResult`): one round trip less per shard, with the same
    value and rule as :class:`OneStepStore` (the task's meta as Celery would store it after
    the task returned, never over a SUCCESS). Once stored there, the task's request says
    ``ignore_result``, so Celery does not store it again. Nothing is stored here when the
    task's result goes nowhere (ignored, an eager call, a backend that is not ours): Celery
    does what it does. The result backend is the site's Redis (``settings.celery``: the
    broker's URL), so the key is written where the site's state lives."""

    def __init__(self, task: Any) -> None:
        self.task = task

    def entry(self, outcome: ShardOutcome) -> TaskResult | None:
        task = self.task
        request = task.request
        backend = task.backend
        if not isinstance(backend, OneStepStore) or request.is_eager or request.ignore_result \
                or task.ignore_result:
            return None
        try:
            return backend.stored_value(request.id, outcome.task_result(), states.SUCCESS, request=request)
        except BackendStoreError:
            return None  # Celery's own store raises it, in its place

    def stored(self) -> None:
        self.task.request.ignore_result = True


class OneStepRedisBackend(OneStepStore, RedisBackend):
    """``redis://`` and ``rediss://``."""


class OneStepSentinelBackend(OneStepStore, SentinelBackend):
    """``sentinel://``."""


#: The app loader's ``override_backends``: the scheme's backend, storing in one step.
BACKENDS = {
    "redis": "workers.resultstore:OneStepRedisBackend",
    "rediss": "workers.resultstore:OneStepRedisBackend",
    "sentinel": "workers.resultstore:OneStepSentinelBackend",
}
