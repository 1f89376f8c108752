"""Celery's Redis result backend storing a task's result in one round trip, not two.

Celery 5.7.0 (``BaseKeyValueStoreBackend._store_result``) reads a task's stored result
before it writes the new one, so that a late duplicate never overwrites a ``SUCCESS``
(a GET, then a SETEX and PUBLISH): two round trips per task in every pool process, about
15 % of a node's pool CPU by a GIL profile. :class:`OneStepStore` keeps that rule and
the stored value (the same JSON meta, ``result_extended`` fields and all, the same
expiry, the same PUBLISH for a waiting ``AsyncResult.get``) but checks and writes inside
one Lua script. Nothing else changes: reading results, Flower (which shows tasks from
their events, not from this store), retries (Celery's ``result_backend_always_retry``).

:data:`BACKENDS` maps the URL schemes to the classes; :func:`workers.app.make_app` puts it
in the app loader's ``override_backends``, so ``result_backend`` stays the broker's URL.
Remove once Celery stores without the read.
"""

from __future__ import annotations

from typing import Any

from celery.backends.base import BackendStoreError
from celery.backends.redis import RedisBackend, SentinelBackend
from kombu.utils.encoding import bytes_to_str

# KEYS: the task's result key. ARGV: the encoded meta, seconds to keep it (0: forever).
# -> 0 when a stored SUCCESS was kept, 1 when written.
STORE_UNLESS_SUCCEEDED = """
local old = redis.call('GET', KEYS[1])
if old then
  local ok, meta = pcall(cjson.decode, old)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then
    return 0
  end
end
local keep = tonumber(ARGV[2])
if keep > 0 then
  redis.call('SETEX', KEYS[1], keep, ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


class OneStepStore:
    """Mixin for Celery's Redis backends: :meth:`_store_result` in one script (see the module
    docstring)."""

    _store_script: Any = None
    _store_script_client: Any = None

    def _store_result(self, task_id: str, result: Any, state: str, traceback: Any = None,
                      request: Any = None, **_kwargs: Any) -> Any:
        backend: Any = self
        meta = backend._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        value = backend.encode(meta)
        if isinstance(value, str) and len(value) > backend._MAX_STR_VALUE_SIZE:
            raise BackendStoreError("value too large for Redis backend", state=state, task_id=task_id)
        backend.ensure(self._store_unless_succeeded, (backend.get_key_for_task(task_id), value))
        return result

    def _store_unless_succeeded(self, key: str, value: Any) -> int:
        backend: Any = self
        client = backend.client
        if self._store_script is None or self._store_script_client is not client:
            self._store_script = client.register_script(STORE_UNLESS_SUCCEEDED)
            self._store_script_client = client
        expires = int(backend.expires or 0)
        return int(self._store_script(keys=[key], args=[value, expires]))


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
