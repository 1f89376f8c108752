"""The Celery app of a dmg node: ``celery -A workers.app worker ...``.

Configured from :func:`settings.celery.celery_config` (acks late, reject on
worker lost, prefetch 1, JSON only, extended results) with the worker-load
bootstep and the autoscaling one (:mod:`workers.agent.autoscale`) added and a
consumer that reconnects to a returning broker within
seconds (:mod:`workers.consumer`). ``app.dmg_settings`` holds the :class:`settings.Settings` it was
built from.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    celeryd_init,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
)

import settings as dmg_settings
from dmg.logformat import warnings_as_lines
from dmg.quietlogs import quiet_request_logs
from dmg.site.presence import client_name
from settings.celery import celery_config
from workers.agent.autoscale import AutoscaleStep
from workers.agent.flowerinfo import NodeInfoStep
from workers.agent.loadstep import WorkerLoadStep
from workers.keptclient import transport_for
from workers.logsetup import bind_task, format_worker_logger, quiet_task_logs, unbind_task
from workers.resultrepr import install as cheap_result_repr
from workers.resultstore import BACKENDS as ONE_STEP_BACKENDS


class DmgCelery(Celery):
    """Celery's app with a cheaper :meth:`now` (the same value)."""

    def now(self) -> datetime:
        """The current time in the app's time zone, as Celery 5.7.0's ``Celery.now``: that one
        makes an aware UTC time aware again through dateutil's ambiguity checks, a no-op
        for UTC that cost 3-4 % of a pool process's CPU per one-file shard (it dates every
        stored result, ``date_done``; a GIL profile)."""
        return datetime.now(self.timezone)


def make_app(settings: dmg_settings.Settings) -> Celery:
    celery_app = DmgCelery("dmg", set_as_current=False)
    celery_app.conf.update(celery_config(settings))
    celery_app.conf.include = ["workers.tasks"]
    # No STARTED state in the result backend: nobody reads it (Flower sees the worker's
    # task-started event, the cloud the shard's own "running" report), and storing it is
    # a Redis round trip in the pool process before every task's body runs.
    celery_app.conf.task_track_started = False
    celery_app.conf.worker_consumer = "workers.consumer:QuickReconnectConsumer"
    # One Redis client per broker channel instead of one per ack and publish (a kombu
    # 5.7.0 workaround, :mod:`workers.keptclient`); the URL's scheme picks which.
    celery_app.conf.broker_transport = transport_for(celery_app.conf.broker_url or "")
    # A task's result stored in one Redis round trip, not a read and then a write
    # (:mod:`workers.resultstore`); the same value, expiry and "never over a SUCCESS" rule.
    celery_app.loader.override_backends = dict(ONE_STEP_BACKENDS)
    celery_app.steps["worker"].add(WorkerLoadStep)
    celery_app.steps["worker"].add(AutoscaleStep)  # does nothing unless DMG_AUTOSCALE_MAX > 0
    celery_app.steps["worker"].add(NodeInfoStep)  # status, reasons, role in Flower
    celery_app.dmg_settings = settings
    # The text of a task's result in its task-succeeded event, made faster, the same text
    # (:mod:`workers.resultrepr`; for the whole process: it is the tracer's).
    cheap_result_repr()
    return celery_app


@celeryd_init.connect
def _name_connections(*, conf: Any = None, **_kwargs: Any) -> None:
    """A node's worker (not Flower, not a CLI using this app) names its broker and result
    connections after the node, so the dispatcher sees it alive (:mod:`dmg.site.presence`).
    Runs before the worker connects; its pool processes inherit the configuration."""
    settings = dmg_settings.load()
    _refuse_bad_certificate(settings)
    if conf is None or not (settings.node_name and settings.gateway):
        return
    name = client_name(settings.gateway, settings.node_name)
    conf.broker_transport_options = {**(conf.broker_transport_options or {}), "client_name": name}
    conf.result_backend_transport_options = {**(conf.result_backend_transport_options or {}),
                                             "client_name": name}
    conf.redis_client_name = name


def _refuse_bad_certificate(settings: dmg_settings.Settings) -> None:
    """A worker whose broker's certificate fails (wrong CA, wrong host name) exits with
    one line instead of retrying forever with a traceback per attempt."""
    from dmg.errors import Fatal
    from dmg.site.connection import check_broker_certificate

    try:
        check_broker_certificate(settings)
    except Fatal as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(1) from None


@worker_init.connect
def _share_memory_with_the_pool(**_kwargs: Any) -> None:
    """Before the prefork pool forks its children: import what every copy uses and move
    every object the main process holds to the garbage collector's permanent
    generation (``gc.freeze``), so that a child's collections do not write to those
    objects' pages and copy them: the pages stay shared, each child's PSS stays small."""
    import codecs

    from dmg.gcfreeze import keep_startup_objects

    # socket.getaddrinfo encodes every host name with the "idna" codec: imported here, not
    # in each child as its first shard connects to Redis (about 10 % of a pool's CPU at
    # load, over 400 shards on 8 processes, by a GIL profile).
    codecs.lookup("idna")
    import dmg.connectors.file  # shared with every child, not imported by each
    import dmg.transfer  # noqa: F401
    import workers.run.shard  # noqa: F401 - what the pool runs

    keep_startup_objects()


@worker_process_init.connect
def _prepare_pool_process(**_kwargs: Any) -> None:
    """In each new pool process, before its first task: build what a shard needs (the
    node's context, this process's runner token), so that the first shard a process
    runs does not pay for it on its start. Nothing here talks to Redis or the cloud (a
    broker that is down must not stop the pool from starting); a failure is logged and
    left to the first task, which builds it again and reports the error."""
    import logging

    from workers.context import node_context
    from workers.run.delivery import my_runner

    try:
        node_context(app.dmg_settings)
        my_runner()
    except Exception as exc:  # the first task builds it again and reports it
        logging.getLogger(__name__).warning("pool process not prepared: %s", exc)


@after_setup_logger.connect
def _quiet_request_logs(*, logger: Any = None, loglevel: int | str | None = None, **_kwargs: Any) -> None:
    """No INFO line per report sent to the cloud (see :mod:`dmg.quietlogs`) nor per task from
    Celery (:func:`workers.logsetup.quiet_task_logs`); the site's log format
    (:mod:`workers.logsetup`)."""
    level = loglevel if loglevel is not None else "INFO"
    quiet_request_logs(level)
    quiet_task_logs(level)
    if logger is not None:
        format_worker_logger(logger)


@after_setup_task_logger.connect
def _format_task_logger(*, logger: Any = None, **_kwargs: Any) -> None:
    if logger is not None:
        format_worker_logger(logger)


@task_prerun.connect
def _bind_task(*, task_id: str = "", args: Any = None, **_kwargs: Any) -> None:
    bind_task(task_id, args)


@task_postrun.connect
def _unbind_task(*, task_id: str = "", **_kwargs: Any) -> None:
    unbind_task(task_id)


app = make_app(dmg_settings.load())
warnings_as_lines(app.dmg_settings.log_format)
