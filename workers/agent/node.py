"""``NodeRuntime``: what ``dmg node start`` runs on one machine.

- the node's Celery worker as a child process (its own session, so the pool
  children stop with it)::

      python -m workers.celery_worker -n <node>@<gateway> -Q node.<node> -c <limit>
          --loglevel INFO

  which is ``celery -A workers.app worker -P prefork -E --without-gossip
  --without-mingle`` without Celery's command line (:mod:`workers.celery_worker`),
  with the environment carrying every ``DMG_*`` setting (``DMG_NODE_NAME``,
  ``DMG_DATA_DIR``, ...), so the worker loads the same :class:`~settings.Settings`;
- the node agent (heartbeats) in a thread;
- any extra services handed in (objects with ``start()``/``stop()``, such as the
  dispatcher candidate), started in order and stopped in reverse.

Before anything runs, the node stamps its gateway's identity in Redis or refuses
to run where another gateway's stamp is (:class:`~dmg.site.identity.ForeignRedis`,
:mod:`dmg.site.identity`); a node that finds another gateway's stamp later (its
Redis was swapped under it) kills its worker at once, without a warm shutdown, and
:meth:`NodeRuntime.run_forever` raises that error.

:meth:`NodeRuntime.run_forever` returns when SIGTERM/SIGINT arrives, the worker
dies, or the node is drained for an upgrade asked in the cloud (``runtime.upgrade.ready``
is then set: :mod:`workers.agent.upgrade`); :meth:`NodeRuntime.stop` asks the worker
for a warm shutdown (SIGTERM: running shards finish), waits ``shutdown_timeout`` s, then kills it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from dmg import proxy as dmg_proxy
from dmg.cloud.client import CloudClient
from dmg.credentials import open_store
from dmg.errors import BrokerError
from dmg.procs import stop_process
from dmg.proxy import proxy_path
from dmg.registration import NodeRegistration, node_dir
from dmg.site.identity import ForeignRedis, SiteIdentity
from dmg.site.state import SiteState
from settings import Settings, process_environ, settings_environ
from settings.redisurl import display_url
from workers.agent.drain import DrainField
from workers.agent.limitfile import persisted_limit
from workers.agent.node_agent import NodeAgent
from workers.agent.reclaim import clean_staging, reclaim_at_start
from workers.agent.requests import PortalRequests
from workers.agent.sizing import limit_source, node_limit
from workers.agent.upgrade import NodeUpgrade
from workers.context import redis_client
from workers.names import node_queue, worker_hostname
from workers.run.outbox import OutboxSender, ReportOutbox
from workers.run.reporter import HttpReporter

log = logging.getLogger(__name__)
#: What the Celery worker wrote to its stdout (JSON log format only).
worker_output = logging.getLogger("workers.worker.stdout")


#: glibc's allocator for the worker and its pool (the node's own environment wins): at
#: most two arenas (each copy thread otherwise gets one of its own, up to 64 MiB, kept),
#: and buffers of 256 KiB or more mapped and unmapped as they come and go (glibc raises
#: that threshold after the first 1 MiB chunk is freed, then keeps freed chunks in the
#: heap): a node copying a 4 GiB file holds no more than its chunks in flight.
WORKER_MALLOC = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": str(256 * 1024)}


class Service(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


def worker_command(settings: Settings, registration: NodeRegistration, *, limit: int,
                   python: str = sys.executable) -> list[str]:
    """The command line of the node's Celery worker."""
    quiet = ["--quiet"] if settings.log_format == "json" else []  # no text banner among JSON lines
    return [python, "-m", "workers.celery_worker", *quiet,
            "-n", worker_hostname(registration.node, registration.gateway),
            "-Q", node_queue(registration.node), "-c", str(limit), "--loglevel", settings.log_level]


def relay_output(worker: subprocess.Popen[bytes]) -> None:
    """Log every non-blank line ``worker`` writes to its stdout (until it closes)."""
    assert worker.stdout is not None
    for raw in worker.stdout:
        line = raw.decode(errors="replace").strip()
        if line:
            worker_output.info("%s", line)


class NodeRuntime:
    """Runs a node: worker process, agent, services. Not reusable after :meth:`stop`.

    ``base_environ`` is the environment the worker inherits (PATH, HOME, ...) under
    the ``DMG_*`` values from ``settings``; by default this process's environment.
    ``worker_log`` (optional) receives the worker's output instead of our stdout.
    """

    def __init__(
        self,
        settings: Settings,
        registration: NodeRegistration,
        *,
        services: Sequence[Service] = (),
        role: Callable[[], str] = lambda: "worker",
        epoch: Callable[[], int] = lambda: 0,
        credential_status: Callable[[], str] = lambda: "none",
        base_environ: Mapping[str, str] | None = None,
        worker_log: Path | None = None,
        shutdown_timeout: float = 60.0,
    ) -> None:
        self.settings = settings.replace(node_name=registration.node, gateway=registration.gateway)
        self.registration = registration
        self.services = list(services)
        # A limit set at runtime (dmg scale, Flower, --concurrency) outlives restarts.
        persisted = persisted_limit(node_dir(self.settings.data_dir, registration.node))
        self.limit = persisted or node_limit(self.settings)
        #: What set the limit: "scaled" (set at runtime), "setting", "cgroup" or "host".
        self.sized_by = "scaled" if persisted else limit_source(self.settings)
        self.base_environ = process_environ() if base_environ is None else dict(base_environ)
        self.worker_log = worker_log
        self.shutdown_timeout = shutdown_timeout
        self.worker: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._started: list[Service] = []
        self._log_file: Any = None
        self._said_stopped = False
        self.refusal: ForeignRedis | None = None
        # Every cloud and cloud-store client of this process uses the gateway's proxy (dmg.proxy).
        dmg_proxy.use(proxy_path(node_dir(self.settings.data_dir, registration.node)))
        self.state = SiteState(redis_client(self.settings, fail_fast=True, registration=registration),
                               registration.gateway,
                               identity=SiteIdentity.of(registration),
                               where=display_url(self.settings.redis_url))
        self.cloud = CloudClient(registration.cloud_url, token=registration.token, ca=settings.cloud_ca)
        self.drain = DrainField(self.state, registration.node,
                                cloud_accepted=lambda: self.agent.cloud_answer is not None,
                                cloud_refused=lambda: self.agent.cloud_refused)
        self.upgrade = NodeUpgrade(self.state, registration.node,
                                   cloud_answer=lambda: self.agent.cloud_answer, on_ready=self.request_stop,
                                   drain_timeout=self.settings.upgrade_drain_timeout,
                                   interval=min(self.settings.heartbeat_interval, 1.0))
        self.portal_requests = PortalRequests(self.settings, self.state, registration.node,
                                              registration.gateway)
        outbox = ReportOutbox(self.state, registration.node)
        self.agent = NodeAgent(
            self.settings, registration, state=self.state, cloud=self.cloud, role=role, epoch=epoch,
            credential_status=credential_status,
            extras=lambda: {**self.drain(), **self.upgrade.fields(), "sized_by": self.sized_by},
            outbox=outbox, reporter=HttpReporter(self.cloud),
            sender=OutboxSender(outbox, self.cloud, HttpReporter(self.cloud, attempts=1)),
            on_foreign=self._refuse, on_answer=self.portal_requests)

    # -- start ---------------------------------------------------------------------------
    def start(self) -> None:
        """Hand back the work of the node's previous life (:mod:`workers.agent.reclaim`), then start
        the worker, the agent and the services (in that order); staging leftovers of dead
        attempts are cleaned up in the background.

        Raises :class:`~dmg.site.identity.ForeignRedis`, starting nothing, when the
        Redis belongs to another gateway."""
        node = self.registration.node
        if not self.registration.gateway_id:
            log.warning("this node's registration has no gateway id (registered with an older dmg): "
                        "nobody checks that its Redis is its gateway's; register it again node=%s", node)
        try:
            self.state.claim_identity()
        except BrokerError as exc:  # every heartbeat checks it again
            log.warning("cannot check which gateway the broker belongs to node=%s error=%s", node, exc)
        _moved, leftovers = reclaim_at_start(self.state, node)
        if leftovers:
            factory = functools.partial(open_store, settings=self.settings)
            threading.Thread(target=clean_staging, args=(self.state, node, leftovers),
                             kwargs={"connector_factory": factory}, name=f"dmg-cleanup-{node}",
                             daemon=True).start()
        try:  # a load from the previous process's worker (a restart) is not this worker's
            self.state.forget_worker_load(node)
        except BrokerError as exc:
            log.warning("cannot clear the previous worker's load node=%s error=%s", node, exc)
        self.start_worker()
        self.agent.start()
        self.upgrade.start()
        for service in self.services:
            service.start()
            self._started.append(service)
        log.info("node started node=%s gateway=%s limit=%d sized_by=%s worker_pid=%s",
                 self.registration.node, self.registration.gateway, self.limit, self.sized_by,
                 self.worker.pid if self.worker else None)

    def start_worker(self) -> subprocess.Popen[bytes]:
        env = {**WORKER_MALLOC, **self.base_environ, **settings_environ(self.settings)}
        output: Any = None
        if self.worker_log is not None:
            self.worker_log.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.worker_log, "ab")  # noqa: SIM115 - closed in stop()
            output = self._log_file
        relay = self.settings.log_format == "json"
        self.worker = subprocess.Popen(
            worker_command(self.settings, self.registration, limit=self.limit), env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if relay else output,
            stderr=output if relay else subprocess.STDOUT if output else None, start_new_session=True)
        if relay:
            # Celery writes a few lines (e.g. "worker: Warm shutdown") straight to stdout,
            # not through logging: they reach the log as JSON lines of the node's own.
            threading.Thread(target=relay_output, args=(self.worker,), name="dmg-worker-stdout",
                             daemon=True).start()
        return self.worker

    # -- run -----------------------------------------------------------------------------
    def run_forever(self) -> int:
        """Start (if not yet), then block until SIGTERM/SIGINT or the worker dies; stops
        everything and returns 0 after a signal, else the worker's exit code. Raises
        ForeignRedis when the broker turned out to be another gateway's."""
        if self.worker is None:
            self.start()
        restore = self._install_signal_handlers()
        try:
            while not self._stop.is_set():
                if self.worker is not None and self.worker.poll() is not None:
                    log.error("the worker process exited with code %s; stopping the node",
                              self.worker.returncode)
                    break
                self._stop.wait(0.5)
        finally:
            restore()
            code = self.stop(hard=self.refusal is not None)
        if self.refusal is not None:
            raise self.refusal
        return 0 if self._stop.is_set() else (code or 1)

    def _refuse(self, error: ForeignRedis) -> None:
        """Stop taking work: the broker is another gateway's (called by the agent)."""
        self.refusal = error
        self._stop.set()
        if self.worker is not None:  # not one more task from that Redis
            _kill_group(self.worker.pid)

    def request_stop(self) -> None:
        """Make :meth:`run_forever` return (thread- and signal-safe)."""
        self._stop.set()

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("received %s; stopping the node", signal.Signals(signum).name)
            self._stop.set()

        for sig in previous:
            signal.signal(sig, on_signal)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return restore

    # -- stop ----------------------------------------------------------------------------
    def stop(self, *, hard: bool = False) -> int | None:
        """Tell the cloud the node stopped (its last heartbeat), then stop services (reverse
        order), the worker (warm, then killed; ``hard``: killed at once) and the agent.

        Returns the worker's exit code. Safe to call twice.
        """
        self.upgrade.stop()
        if not self._said_stopped and self.worker is not None:
            self._said_stopped = True
            # the cloud shows it Offline ("stopped") at once; Upgrading when it restarts for one
            self.agent.say_stopped(restarting=self.upgrade.ready.is_set())
        while self._started:
            service = self._started.pop()
            try:
                service.stop()
            except Exception:
                log.exception("a service did not stop cleanly: %r", service)
        code: int | None = None
        if self.worker is not None:
            # SIGTERM to the main process only: Celery's warm shutdown lets running tasks
            # finish; after the timeout the whole session is killed.
            if hard:
                _kill_group(self.worker.pid)
            code = stop_process(self.worker, timeout=self.shutdown_timeout)
            _kill_group(self.worker.pid)
        self.agent.stop()
        self.portal_requests.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.cloud.close()
        return code


def _kill_group(pgid: int) -> None:
    """Kill what is left of the worker's session (orphaned pool children)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
