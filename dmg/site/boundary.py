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

from dmg.errors import BrokerCertificateRefused, BrokerError, BrokerRefused, BrokerUnreachable

__all__ = ["SitePipeline", "SiteRedis", "broker_errors", "certificate_problem"]

#: What OpenSSL says when the name in the URL is not one the certificate names.
_WRONG_NAME = ("hostname mismatch", "ip address mismatch")


@contextmanager
def broker_errors() -> Iterator[None]:
    """Translate redis-py's errors raised inside the block (see the module docstring)."""
    try:
        yield
    except (NoScriptError, WatchError):
        raise
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        problem = certificate_problem(exc)
        if problem:
            raise BrokerCertificateRefused(problem) from exc
        if _login_refused(exc):
            raise BrokerUnreachable(
                "the site broker refused the login: no password or a wrong one (set DMG_REDIS_PASSWORD, "
                "or put the password of `dmg up` in <data dir>/redis-password)") from exc
        raise BrokerUnreachable(f"the site broker is unreachable: {_one_line(exc)}") from exc
    except redis.ResponseError as exc:
        raise BrokerRefused(f"the site broker refused a command: {_one_line(exc)}") from exc
    except redis.RedisError as exc:
        raise BrokerError(f"the site broker failed: {_one_line(exc)}") from exc


#: What Redis answers a client without the right password (redis-py 8 opens with HELLO).
_LOGIN_REFUSED = ("NOAUTH", "HELLO must be called with the client already authenticated",
                  "invalid username-password pair", "Authentication required", "WRONGPASS")


def _login_refused(exc: BaseException) -> bool:
    text = str(exc)
    return any(marker in text for marker in _LOGIN_REFUSED)


def certificate_problem(exc: BaseException) -> str:
    """One line saying why TLS to the broker refused its certificate, naming a wrong CA or
    a wrong host name; "" when ``exc`` is no certificate failure. redis-py (8.1) raises a
    ConnectionError without a cause whose message holds OpenSSL's, so the message is read."""
    text = _one_line(exc)
    if "CERTIFICATE_VERIFY_FAILED" not in text:
        return ""
    detail = text.split("certificate verify failed:", 1)[-1].split("(_ssl.c", 1)[0].strip(" .")
    where = "the broker"
    if "connecting to " in text:
        where = text.split("connecting to ", 1)[-1].split(". ", 1)[0]
    if any(marker in detail.lower() for marker in _WRONG_NAME):
        return (f"TLS to the site broker at {where} failed: wrong host name: {detail} (use in "
                "DMG_REDIS_URL a host name that the server's certificate names)")
    return (f"TLS to the site broker at {where} failed: wrong CA: the server's certificate is not "
            f"signed by a CA this client trusts: {detail} (set DMG_REDIS_TLS_CA to the CA that "
            "signed it)")


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
