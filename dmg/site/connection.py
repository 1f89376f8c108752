"""Clients of the site broker for dmg's own keys (site state, leases, outbox).

Every Redis client dmg builds from ``settings.redis_url`` comes from
:func:`redis_client`:

- ``redis://`` (``rediss://``, ``unix://``): a client of that server;
- ``sentinel://h1:p1;sentinel://h2:p2/db`` (:mod:`settings.redisurl`): a client of
  the primary that the sentinels name ``settings.redis_master_name``. Each new
  connection asks the sentinels where the primary is, so after a failover the
  next command (or its retry) reaches the promoted replica.

Two knobs say how a caller lives through a broker outage:

- ``timeout`` bounds every socket operation and connect (s);
- ``retry_for`` is roughly how long (s) a command keeps retrying a lost or refused
  connection (also "LOADING" while a restarted Redis reads its AOF) before it raises
  :class:`dmg.errors.BrokerUnreachable` (:mod:`dmg.site.boundary`): ``0`` for periodic
  publishers that must report an outage at once instead of stalling (heartbeats, worker load, the dispatcher
  lease), longer for workers that would rather wait out a restart or a failover
  than fail a shard (:data:`RIDE_OUT`).

A retried write may run twice when the connection broke after Redis executed it
but before the reply came back; dmg's writes tolerate that (attempt numbers only
grow, sets and hashes are idempotent, a shard pending twice is placed once more and
fences the first placement).

What a Sentinel failover can lose
---------------------------------
Replication is asynchronous: the promoted replica may miss the last writes the
old primary acknowledged (usually milliseconds of them; a Redis that crashes with
``appendfsync everysec`` loses up to a second the same way). The replication stream
is ordered, so what is lost is always the tail. For dmg that means:

- a placement (new attempt, task message, leaving ``pending``): the shard is
  pending again, or its message is gone; the lease is taken again after the outage
  and a new dispatcher re-issues queued shards with a new attempt, so a lost message
  costs a re-placement and a surviving old one is skipped as stale;
- a worker's start or finish mark: the shard may run again under a new attempt; the
  sink commit is fenced by attempt and idempotent, so each file lands once;
- the lease's epoch increment: a dispatcher may get an epoch the cloud already saw;
  its claims are refused as stale and it takes a newer lease (:mod:`dispatcher.loop`).
  Keep the sentinels' ``down-after-milliseconds`` above the lease TTL, so a
  dispatcher whose lease was lost has stopped before the promoted replica can
  grant it again;
- a shard report waiting in a node's outbox (only while the cloud is away too): the
  cloud never hears that shard's end and shows it running; run the pipeline again;
- Celery results and kombu's delivery bookkeeping: at worst a message is delivered
  again after the visibility timeout and skipped as finished.

``min-replicas-to-write 1`` with a small ``min-replicas-max-lag`` on the primary
narrows the window further, at the price of refusing writes while no replica is
in sync.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.driver_info import DriverInfo
from redis.retry import Retry
from redis.sentinel import Sentinel

from dmg.errors import BadInput, BrokerCertificateRefused, BrokerError, Fatal
from dmg.site.boundary import SiteRedis, broker_errors, certificate_problem
from settings import Settings, SettingsError
from settings.redistls import BrokerTLS, broker_password, broker_tls
from settings.redisurl import BrokerAddress, parse_redis_url

__all__ = ["RIDE_OUT", "broker_address", "check_broker_certificate", "redis_client"]

T = TypeVar("T")

#: Seconds a worker rides out a broker outage before a Redis call fails: longer than
#: a Redis restart, and than a Sentinel failover (down-after-milliseconds plus the
#: election) with the defaults most groups run.
RIDE_OUT = 120.0
#: The longest pause between two retries.
_BACKOFF_CAP = 0.5
_BACKOFF_BASE = 0.05
#: What every connection tells Redis it is (``CLIENT SETINFO``), given, not looked up: redis-py
#: 8.1.0 otherwise asks ``importlib.metadata`` for its own version in every new connection's
#: ``__init__`` (a search of sys.path: 7 % of a worker pool's CPU over its first shards).
_DRIVER = DriverInfo(name="redis-py", lib_version=redis.__version__)


class SentinelPrimary(SiteRedis):
    """A client of a Sentinel group's primary; :meth:`close` also closes its sentinel
    connections."""

    sentinel_manager: Sentinel | None = None

    def close(self) -> None:
        super().close()
        manager, self.sentinel_manager = self.sentinel_manager, None
        if manager is not None:
            manager.close()


class KeepsOneConnection(SiteRedis):
    """A client whose commands from the thread that built it all go on one kept connection,
    made at that thread's first command (building the client still talks to nobody); the
    commands of any other thread take pooled connections, as a plain client's do. For a pool
    process, whose main thread runs one shard at a time: each of its commands saves the
    pool's checkout and release, which poll the socket (about a tenth of a pool process's CPU
    on small shards), while the threads of a large upload never wait for the main thread's
    connection. Built on redis-py's single-connection mode, seen by the building thread only;
    that thread must not block on Redis (``BLPOP``). A lost connection is made again on the
    next command or its retry, as a pooled one is. Pipelines take pooled connections.

    It stands in for two attributes redis-py keeps for that mode (``connection`` and
    ``_single_connection_client``, read by ``execute_command`` and its retry; written as
    of redis-py 8.2): ``tests/site/test_connection.py`` checks the kept connection is the
    one used, so a redis-py that reads them otherwise fails there, not in a pool process."""

    _kept: Any = None
    _keeper: int = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keeper = threading.get_ident()

    @property
    def connection(self) -> Any:
        """redis-py's single connection: the kept one, for the building thread only."""
        return self._kept if threading.get_ident() == self._keeper else None

    @connection.setter
    def connection(self, value: Any) -> None:  # redis-py sets it (None) in __init__ and close()
        self._kept = value

    @property
    def _single_connection_client(self) -> bool:
        return self._kept is not None and threading.get_ident() == self._keeper

    @_single_connection_client.setter
    def _single_connection_client(self, value: bool) -> None:  # derived: redis-py's value ignored
        pass

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if self._kept is None and threading.get_ident() == self._keeper:
            with broker_errors():
                self._kept = self.connection_pool.get_connection()
        return super().execute_command(*args, **options)

    def close(self) -> None:
        kept, self._kept = self._kept, None
        if kept is not None:
            self.connection_pool.release(kept)
        super().close()


class KeptSiteRedis(KeepsOneConnection):
    """:class:`KeepsOneConnection` of a plain Redis URL."""


def broker_address(settings: Settings) -> BrokerAddress:
    """``settings.redis_url`` parsed; BadInput with a hint when it cannot be used."""
    try:
        return parse_redis_url(settings.redis_url)
    except SettingsError as exc:
        raise BadInput(str(exc), hint="fix DMG_REDIS_URL (or redis_url in dmg.toml)") from None


class DeadlineRetry(Retry):
    """redis-py's :class:`~redis.retry.Retry`, bounded by time instead of a count.

    redis-py retries a connect inside a retried command with the same policy; a
    count would multiply (N connects times N commands), a deadline does not: an outer
    retry that finds its time used up by an inner one raises at once.
    """

    def __init__(self, retry_for: float) -> None:
        super().__init__(ExponentialBackoff(cap=_BACKOFF_CAP, base=_BACKOFF_BASE), -1)
        self.retry_for = retry_for

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, DeadlineRetry):
            return NotImplemented
        return self.retry_for == other.retry_for

    __hash__ = Retry.__hash__

    def call_with_retry(self, do: Callable[[], T],
                        fail: Callable[[Exception], Any] | Callable[[Exception, int], Any],
                        is_retryable: Callable[[Exception], bool] | None = None,
                        with_failure_count: bool = False) -> T:
        deadline = time.monotonic() + self.retry_for
        failures = 0
        while True:
            try:
                return do()
            except self._supported_errors as error:
                if is_retryable is not None and not is_retryable(error):
                    raise
                if certificate_problem(error):
                    raise  # a wrong CA or host name stays wrong: no retry
                failures += 1
                if with_failure_count:
                    fail(error, failures)  # type: ignore[call-arg]
                else:
                    fail(error)  # type: ignore[call-arg]
                pause = self._backoff.compute(failures)
                if time.monotonic() + pause > deadline:
                    raise error
                time.sleep(pause)


def _broker_tls(settings: Settings) -> BrokerTLS | None:
    try:
        return broker_tls(settings)
    except SettingsError as exc:
        raise BadInput(str(exc), hint="fix the DMG_REDIS_TLS_* settings") from None


def retry_policy(retry_for: float) -> Retry:
    """Retries covering about ``retry_for`` s of refused or broken connections."""
    if retry_for <= 0:
        return Retry(NoBackoff(), 0)
    return DeadlineRetry(retry_for)


def redis_client(settings: Settings, *, timeout: float, retry_for: float = 0.0,
                 health_check_interval: int = 0, client_name: str = "",
                 keep_connection: bool = False) -> redis.Redis:
    """A client of the site broker (see the module docstring); connects lazily.
    ``keep_connection``: the building thread's commands all on the connection its first one
    took (:class:`KeepsOneConnection`: only for a thread that never blocks on Redis); for a
    plain URL only: a kept connection to a Sentinel group's primary did not follow a
    failover in ``tests/ha/test_sentinel.py``, so a Sentinel client stays pooled.

    ``client_name`` names every connection (``CLIENT SETNAME``): a node's processes
    pass :func:`dmg.site.presence.client_name` so the dispatcher sees them alive.

    Raises BadInput when ``settings.redis_url`` is malformed; never raises for an
    unreachable broker (the first command does).
    """
    address = broker_address(settings)
    tls = _broker_tls(settings)
    password = broker_password(settings)
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "socket_keepalive": True,
        "retry": retry_policy(retry_for),
        "health_check_interval": health_check_interval,
        "driver_info": _DRIVER,
    }
    if client_name:
        options["client_name"] = client_name
    if tls is not None:
        options.update(tls.redis_py())
    if not address.is_sentinel:
        if password:
            options["password"] = password
        url = address.url
        if tls is not None and url.lower().startswith("redis://"):
            url = "rediss://" + url[len("redis://"):]
        return (KeptSiteRedis if keep_connection else SiteRedis).from_url(url, **options)
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if tls is not None:
        options["ssl"] = True
        sentinel_kwargs.update(ssl=True, **tls.redis_py())
    # redis-py (8.1) leaves Sentinel untyped: the ignores below are for mypy --strict only.
    manager = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
        list(address.sentinels), sentinel_kwargs=sentinel_kwargs,
        db=address.db, username=address.username, password=address.password or password, **options)
    client = manager.master_for(  # type: ignore[no-untyped-call, unused-ignore]
        settings.redis_master_name, redis_class=SentinelPrimary)
    assert isinstance(client, SentinelPrimary)
    client.sentinel_manager = manager
    return client


def wait_until_serving(host: str, port: int, *, password: str, ca: Path | None, deadline: float) -> None:
    """Return once the Redis just started on ``host:port`` answers commands (``ca``: it
    speaks TLS, with a certificate of that CA), or at ``deadline`` (``time.monotonic()``).
    A Redis listens while it still loads its AOF and answers ``-LOADING`` to every command
    meanwhile. A refused login or certificate returns at once: the server's clients meet
    and report it."""
    options: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(ca), "ssl_check_hostname": False} \
        if ca is not None else {}
    probe = redis.Redis(host=host, port=port, password=password or None, socket_timeout=1.0,
                        socket_connect_timeout=1.0, **options)
    try:
        while True:
            try:
                probe.ping()
                return
            except redis.AuthenticationError:
                return
            except redis.ConnectionError as exc:  # BusyLoadingError is one
                if certificate_problem(exc) or time.monotonic() >= deadline:
                    return
                time.sleep(0.02)
            except redis.RedisError:
                return
    finally:
        probe.close()


def check_broker_certificate(settings: Settings, *, timeout: float = 5.0) -> None:
    """With TLS on, connect once and raise :class:`~dmg.errors.Fatal` with one line naming a
    wrong CA or a wrong host name; nothing without TLS, nothing for a broker that is merely
    unreachable (every process rides that out). Processes call it before they start
    (``dmg node start``, the worker, Flower, ``dmg up``)."""
    if _broker_tls(settings) is None:
        return
    client = redis_client(settings, timeout=timeout)
    try:
        client.ping()
    except BrokerCertificateRefused as exc:
        raise Fatal(str(exc)) from None
    except BrokerError:
        return
    finally:
        client.close()
