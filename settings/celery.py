"""The Celery configuration derived from :class:`settings.Settings`.

Broker outages are survived, not fatal (DESIGN.md, "Rules that make it reliable"):
a worker retries its broker connection forever, sockets have keepalive and
timeouts so a broker that vanished without closing them is noticed, and results
are stored with retries. With a Sentinel group (``sentinel://`` in
``DMG_REDIS_URL``, :mod:`settings.redisurl`) both the broker and the result
backend follow the group's primary across failovers.

Every Redis key and channel Celery uses (queues ``node.<name>``, kombu's bindings,
``unacked`` keys, the broadcast and event channels, ``celery-task-meta-*`` results)
is under :func:`broker_key_prefix` of ``settings.gateway``, so gateways with
different names can share one Redis database without consuming each other's tasks
(see :mod:`dmg.site.state`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from settings import Settings, SettingsError
from settings.redistls import broker_password, broker_tls, client_url
from settings.redisurl import parse_redis_url

#: Seconds a broker socket may wait for a reply or a connection.
BROKER_SOCKET_TIMEOUT = 30.0
BROKER_CONNECT_TIMEOUT = 5.0
#: Seconds between checks of idle broker connections (kombu and redis-py).
BROKER_HEALTH_CHECK_INTERVAL = 10
#: Seconds a sentinel may take to answer "who is the primary?".
SENTINEL_TIMEOUT = 2.0


def broker_key_prefix(gateway: str) -> str:
    """The prefix of every Celery key of ``gateway`` in Redis: ``dmg:<gateway>:celery:``
    (none without a gateway: a process that belongs to no gateway)."""
    return f"dmg:{gateway}:celery:" if gateway else ""


def restore_sweep(visibility_timeout: float) -> dict[str, Any]:
    """kombu looks for expired unacked messages every 10 s x 10 calls; a short visibility
    timeout (tests, tuning) gets a sweep about twice per timeout instead."""
    if visibility_timeout <= 0:
        raise SettingsError(f"DMG_BROKER_VISIBILITY_TIMEOUT={visibility_timeout} must be positive")
    if visibility_timeout >= 600:
        return {}
    return {"unacked_restore_interval": max(1.0, visibility_timeout / 2), "unacked_restore_throttle": 1}


def celery_config(settings: Settings, *, client_name: str = "") -> dict[str, Any]:
    """Reliability-first Celery settings (see DESIGN.md, "Rules that make it reliable").

    ``client_name`` names every Redis connection of the broker and the result backend
    (``CLIENT SETNAME``); a node's processes pass theirs (:mod:`dmg.site.presence`).

    The broker's password and TLS options (:mod:`settings.redistls`) go to both the broker
    and the result backend: with TLS the server's certificate and host name are checked.

    Raises :class:`settings.SettingsError` when ``settings.redis_url`` cannot be used.
    """
    address = parse_redis_url(settings.redis_url)
    password = broker_password(settings)
    tls = broker_tls(settings)
    if address.is_sentinel:
        if password and address.password is None:
            address = dataclasses.replace(address, password=password)
        url = address.canonical_url()
    else:
        url = client_url(address.url, tls=tls is not None, password=password)
    transport: dict[str, Any] = {
        # Recovery of a dead node is the dispatcher's job, not the broker's: a long
        # visibility timeout keeps Redis from re-delivering a long shard twice.
        "visibility_timeout": settings.broker_visibility_timeout,
        **restore_sweep(settings.broker_visibility_timeout),
        "socket_timeout": BROKER_SOCKET_TIMEOUT,
        "socket_connect_timeout": BROKER_CONNECT_TIMEOUT,
        "socket_keepalive": True,
        "health_check_interval": BROKER_HEALTH_CHECK_INTERVAL,
        "retry_on_timeout": True,
    }
    backend_transport: dict[str, Any] = {}
    if client_name:
        transport["client_name"] = client_name
    prefix = broker_key_prefix(settings.gateway)
    if prefix:
        transport["global_keyprefix"] = prefix
        backend_transport["global_keyprefix"] = prefix
    if address.is_sentinel:
        sentinel = {"master_name": settings.redis_master_name,
                    "sentinel_kwargs": {"socket_timeout": SENTINEL_TIMEOUT,
                                        "socket_connect_timeout": SENTINEL_TIMEOUT}}
        transport.update(sentinel)
        backend_transport.update(sentinel)
    ssl_options: dict[str, Any] = {}
    if tls is not None:
        # A rediss:// URL alone made Celery 5.x's result backend raise "A rediss:// URL must
        # have parameter ssl_cert_reqs" at worker start: the options are always given here.
        ssl_options = {"broker_use_ssl": tls.redis_py(), "redis_backend_use_ssl": tls.redis_py()}
    return {
        **ssl_options,
        "broker_url": url,
        "result_backend": url,
        "result_extended": True,
        "result_expires": 7 * 24 * 3600,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_track_started": True,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        # A worker whose broker went away (restart, failover) reconnects by itself, forever.
        "broker_connection_retry_on_startup": True,
        "broker_connection_retry": True,
        "broker_connection_max_retries": None,
        "broker_transport_options": transport,
        "result_backend_transport_options": backend_transport,
        "result_backend_always_retry": True,
        "result_backend_max_retries": 60,
        "redis_socket_timeout": BROKER_SOCKET_TIMEOUT,
        "redis_socket_connect_timeout": BROKER_CONNECT_TIMEOUT,
        "redis_socket_keepalive": True,
        "redis_retry_on_timeout": True,
        **({"redis_client_name": client_name} if client_name else {}),
        "redis_backend_health_check_interval": BROKER_HEALTH_CHECK_INTERVAL,
        "task_default_queue": "dmg.default",
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }
