"""The error boundary of the site's Redis: redis-py's errors become :mod:`dmg.errors`.

:class:`SiteRedis` (what :func:`dmg.site.connection.redis_client` returns) and its
pipelines raise :class:`~dmg.errors.BrokerUnreachable` for a broker that cannot be
reached (connection refused or reset, timeout, ``LOADING``, authentication),
:class:`~dmg.errors.BrokerRefused` for an error reply and :class:`~dmg.errors.BrokerError`
for anything else redis-py raises, each with the redis-py error as ``__cause__``
(the way httpx maps httpcore's errors in one context manager). Retries within a
command (:class:`dmg.site.connection.DeadlineRetry`) happen before the translation.

Two redis-py errors pass through untranslated, because they are control flow
that redis-py or this package handles, never failures: ``NoScriptError`` (a Lua
script's first call; redis-py's ``Script.__call__`` loads it and calls again) and
``WatchError`` (an optimistic transaction lost its race; :mod:`dmg.site.state`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError, WatchError

from dmg.errors import BrokerError, BrokerRefused, BrokerUnreachable

__all__ = ["SitePipeline", "SiteRedis", "broker_errors"]


@contextmanager
def broker_errors() -> Iterator[None]:
    """Translate redis-py's errors raised inside the block (see the module docstring)."""
    try:
        yield
    except (NoScriptError, WatchError):
        raise
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise BrokerUnreachable(f"the site broker is unreachable: {_one_line(exc)}") from exc
    except redis.ResponseError as exc:
        raise BrokerRefused(f"the site broker refused a command: {_one_line(exc)}") from exc
    except redis.RedisError as exc:
        raise BrokerError(f"the site broker failed: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class SiteRedis(redis.Redis):
    """A redis-py client whose commands and pipelines raise :mod:`dmg.errors` only."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        with broker_errors():
            return super().execute_command(*args, **options)  # type: ignore[no-untyped-call, unused-ignore]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> SitePipeline:
        return SitePipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


class SitePipeline(Pipeline):
    """redis-py's pipeline with the same translation (queued and immediate commands)."""

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        with broker_errors():
            return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call, unused-ignore]

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        with broker_errors():
            return super().execute(raise_on_error)
