"""An embedded site on one machine: Redis, the cloud, a gateway, N nodes, Flower.

:class:`EmbeddedSite` is what ``dmg up`` and ``dmg demo`` run, and what integration
tests and benchmarks start (with fault hooks: :class:`dmg.embedded.faults.SiteUnderTest`)::

    with EmbeddedSite(settings, nodes=2) as site:
        client = site.client()            # a user client of the site's cloud
        ...

Every child gets the same ``DMG_*`` settings (:attr:`EmbeddedSite.settings`:
Redis URL, cloud URL, data dir, API token ...), runs in its own process group,
logs to ``<data dir>/logs/<name>.log``, and is stopped by :meth:`stop` (SIGTERM,
then SIGKILL for anything left in its group). A lock keeps two sites off one data
dir; the pids of a site killed without cleaning up are reaped on the next start
(:mod:`dmg.embedded.pidbook`). ``dmg up`` keeps it running with
:class:`dmg.embedded.supervisor.Supervisor` over :meth:`EmbeddedSite.dead_children` and
:meth:`EmbeddedSite.restart_child`. The gateway and the node registrations are made by
:mod:`dmg.embedded.bootstrap`, Flower's command and password come from
:mod:`dmg.embedded.flower`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from dmg.embedded.bootstrap import ensure_gateway, register_node
from dmg.embedded.children import Child, log_tail, spawn
from dmg.embedded.flower import flower_command, flower_environ, password_hint
from dmg.embedded.pidbook import PidBook, kill_survivors
from dmg.embedded.readiness import wait_nodes_ready
from dmg.embedded.redis import EmbeddedRedis
from dmg.embedded.secretfile import read_or_create
from dmg.embedded.tls import site_tls
from dmg.errors import Conflict, Fatal, NotFound
from dmg.procs import (
    child_environ,
    free_port,
    kill_group,
    port_open,
    stop_group,
    wait_for_port,
    wait_then_kill,
)
from dmg.site.connection import check_broker_certificate
from settings import Settings, settings_environ
from settings.redistls import broker_password, client_url, password_file

if TYPE_CHECKING:
    from dmg.cloud.client import CloudClient
    from dmg.cloud.server import CloudProcess

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


def _port_of(url: str, default: int) -> int:
    try:
        return urlsplit(url if "//" in url else f"//{url}").port or default
    except ValueError:
        return default


def _pick_port(wanted: int) -> int:
    return free_port(HOST) if port_open(HOST, wanted) else wanted


class EmbeddedSite:
    """A whole site in child processes; start() it, stop() it, or use ``with``."""

    def __init__(self, settings: Settings, *, nodes: int = 2, gateway: str = "site", flower: bool = True,
                 node_concurrency: int | None = None, startup_timeout: float = 90.0,
                 echo: Callable[[str], None] | None = None,
                 node_environ: Mapping[str, Mapping[str, str]] | None = None,
                 external_broker: bool = False, tls: bool = False, node_python: str = "") -> None:
        if nodes < 1:
            raise ValueError("a site needs at least one node")
        data_dir = settings.data_dir.expanduser().absolute()
        self.settings = settings.replace(data_dir=data_dir)
        self.gateway = gateway
        self.node_names = [f"node{k}" for k in range(1, nodes + 1)]
        self.with_flower = flower
        self.node_concurrency = node_concurrency
        self.startup_timeout = startup_timeout
        # Extra environment per node name (e.g. a HOME of its own, as if on another machine).
        self.node_environ = {name: dict(env) for name, env in (node_environ or {}).items()}
        # True: the nodes use settings.redis_url as given (a Redis or Sentinel group run
        # by someone else, see settings.redisurl); no Redis is started. A sentinel://
        # URL always names an external group.
        self.external_broker = external_broker or self.settings.redis_url.strip().lower().startswith(
            "sentinel://")
        # True: a throw-away CA (dmg.embedded.tls): Redis on TLS only, the cloud on HTTPS,
        # every client checking both against that CA.
        self.tls = tls
        # The interpreter the nodes run on ("": this one's): another install of dmg (tests of upgrades).
        self.node_python = node_python
        self.gateway_keys: dict[str, str] = {}
        self._token_given = bool(settings.api_token)
        self.flower_url = ""
        self._echo = echo or (lambda _line: None)
        self._redis: EmbeddedRedis | None = None
        self._cloud: CloudProcess | None = None
        self._children: list[Child] = []
        self._lock: IO[str] | None = None
        self._env: dict[str, str] = {}
        # every process of the site seen so far (a node's worker lives in a session of its
        # own: if the node dies it is found there, not as a child)
        self._pids = PidBook(self.data_dir / "site.pids")

    # -- paths and urls --------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def api_url(self) -> str:
        return f"{self.settings.cloud_url}/api/v1"

    @property
    def portal_url(self) -> str:
        return f"{self.settings.cloud_url}/"

    @property
    def flower_user(self) -> str:
        return self.settings.flower_user

    @property
    def flower_password_hint(self) -> str:
        return password_hint(self.settings)

    @property
    def redis_password_hint(self) -> str:
        return "DMG_REDIS_PASSWORD" if self.settings.redis_password else str(password_file(self.settings))

    def client(self) -> CloudClient:
        """A user client of this site's cloud (close it, or use ``with``)."""
        from dmg.cloud.client import CloudClient

        return CloudClient(self.settings.cloud_url, token=self.settings.api_token, ca=self.settings.cloud_ca)

    def broker_url(self) -> str:
        """The site broker's URL with its password, for a tool's or a test's own plain
        redis-py client (dmg's own clients read the password from the data dir)."""
        return client_url(self.settings.redis_url, tls=False, password=broker_password(self.settings))

    # -- the processes, for the supervisor -------------------------------------------
    def dead_children(self) -> list[str]:
        """Names of the site's processes that exited while it runs (``dmg up`` watches
        this): nodes, ``flower``, ``cloud``, ``redis``. What a dead one left running (a
        node's Celery worker lives in a session of its own) is killed at once, so a dead
        node takes no more work."""
        self._record_pids()
        dead = [name for name, proc in self._processes().items() if proc.poll() is not None]
        for name in dead:
            self._pids.reap_family(self._processes()[name].pid)
        return dead

    def pid_of(self, name: str) -> int | None:
        """The pid of the site's process ``name`` (a node, ``flower``, ``cloud``, ``redis``)."""
        proc = self._processes().get(name)
        return proc.pid if proc is not None else None

    def exit_code(self, name: str) -> int | None:
        """The exit code of process ``name`` (None while it runs; negative: killed by a signal)."""
        proc = self._processes().get(name)
        return proc.poll() if proc is not None else None

    def log_path(self, name: str) -> Path:
        """Where process ``name`` logs."""
        if name == "redis":
            return self.data_dir / "redis" / "redis.log"
        return self.log_dir / f"{name}.log"

    def restart_child(self, name: str) -> int:
        """Start the dead process ``name`` again, as it was (same settings, port, data dir;
        Redis reloads its AOF); returns its pid. Raises Conflict if it runs, NotFound if the
        site has no such process, Fatal if it does not start."""
        proc = self._processes().get(name)
        if proc is None:
            raise NotFound(f"this site has no process {name!r}",
                           hint=f"its processes: {', '.join(self._processes())}")
        if proc.poll() is None:
            raise Conflict(f"{name} is running", hint="kill or stop it first")
        self._pids.reap_family(proc.pid)
        if name == "redis":
            assert self._redis is not None
            self._redis.stop()
            try:
                self._redis.start()
            except (RuntimeError, TimeoutError) as exc:
                self._redis.stop()
                raise Fatal(f"redis-server did not start: {exc}", hint=f"see {self.log_path(name)}") from None
        elif name == "cloud":
            assert self._cloud is not None
            self._cloud.stop()
            self._cloud = None
            self._launch_cloud()
        elif name == "flower":
            self._children = [c for c in self._children if c.name != name]
            self._start_flower()
        else:
            self._relaunch_node(name)
        self._record_pids()
        restarted = self.pid_of(name)
        assert restarted is not None
        return restarted

    def _processes(self) -> dict[str, subprocess.Popen[bytes]]:
        """The site's top-level processes by name (Redis and the cloud included)."""
        procs = {c.name: c.proc for c in self._children}
        if self._cloud is not None:
            procs["cloud"] = self._cloud.proc
        if self._redis is not None and self._redis.proc is not None:
            procs["redis"] = self._redis.proc
        return procs

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> EmbeddedSite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> EmbeddedSite:
        """Start everything and wait until every node is Online; on failure, stop it all."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            self.reap_leftovers()
            if not self.external_broker:
                self._start_redis()
            else:
                check_broker_certificate(self.settings)
            self._start_cloud()
            with self.client() as client:
                self.gateway_keys = ensure_gateway(client, self.gateway, echo=self._echo,
                                                   encryption="tls" if self.tls else "none")
            for name in self.node_names:
                self._register_node(name)
            for name in self.node_names:
                self._start_node(name)
            if self.with_flower:
                self._start_flower()
            self.wait_nodes_online(timeout=self.startup_timeout)
            self._record_pids()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process this site started, newest first; safe to call twice. Whatever
        interrupts the graceful stop (a test's timeout raised in the middle of it), every
        process the site ever started is SIGKILLed before the exception goes on."""
        self._record_pids()
        everything = self._pids.snapshot()
        try:
            self._stop_gracefully()
        finally:
            kill_survivors(everything, outlived="the site's stop")
            self._pids.forget()
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def started_processes(self) -> list[tuple[int, float]]:
        """Every process the site started so far (and their children), as ``(pid, start time)``."""
        self._record_pids()
        return self._pids.snapshot()

    def _stop_gracefully(self) -> None:
        flower = [c for c in self._children if c.name == "flower"]
        nodes = [c for c in self._children if c.name in self.node_names]
        others = [c for c in self._children if c not in flower and c not in nodes]
        for child in flower:
            stop_group(child.proc, timeout=10)
        for child in nodes:  # all at once: each finishes or hands back its shards
            with contextlib.suppress(ProcessLookupError):
                child.proc.terminate()
        for child in nodes:  # a node waits up to 60 s for its running shards
            wait_then_kill(child.proc, timeout=75)
        for child in others:
            stop_group(child.proc, timeout=15)
        self._children.clear()
        self._stop_cloud()
        if self._redis is not None:
            self._redis.stop()
            self._redis = None

    def reap_leftovers(self) -> None:
        """Kill the processes of a site that was killed before it could stop them."""
        self._pids.reap_leftovers()

    def wait_nodes_online(self, *, timeout: float) -> list[dict[str, Any]]:
        """Poll the cloud until every node of the site is up: Online, or Limited only
        because it cannot reach some stores (work needing them goes elsewhere), with its
        worker up (a job limit above 0, so the dispatcher can place work on it); Fatal
        with reasons if not (see :mod:`dmg.embedded.readiness`)."""
        with self.client() as client:
            return wait_nodes_ready(client, self.gateway, self.node_names, timeout=timeout,
                                    log_dir=self.log_dir, check_alive=self._check_children)

    # -- steps -----------------------------------------------------------------------
    def _take_lock(self) -> None:
        if self._lock is not None:
            return
        fh = open(self.data_dir / "site.lock", "a+")  # noqa: SIM115 - held until stop()
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise Conflict(f"another embedded site (`dmg up` or `dmg demo`) is using {self.data_dir}",
                           hint="stop it first, or set DMG_DATA_DIR to another directory") from None
        self._lock = fh

    def _record_pids(self) -> None:
        """Remember every live process of the site (see :class:`PidBook`)."""
        self._pids.record(proc.pid for proc in self._processes().values() if proc.poll() is None)

    def _start_redis(self) -> None:
        port = _pick_port(_port_of(self.settings.redis_url, 6479))
        password = self.settings.redis_password or read_or_create(password_file(self.settings), nbytes=24)
        tls = site_tls(self.data_dir) if self.tls else None
        self._echo(f"starting redis on {HOST}:{port}" + (" (TLS only)" if tls else ""))
        redis = EmbeddedRedis(self.data_dir / "redis", port, host=HOST, password=password, tls=tls)
        self._redis = redis
        try:
            redis.start()
        except (RuntimeError, TimeoutError) as exc:
            raise Fatal(f"redis-server did not start: {exc}",
                        hint=f"see {self.data_dir / 'redis' / 'redis.log'}") from None
        self.settings = self.settings.replace(redis_url=redis.url)
        if tls is not None:
            self.settings = self.settings.replace(redis_tls_ca=str(tls.ca))
        check_broker_certificate(self.settings)

    def _start_cloud(self) -> None:
        from dmg.cloud.keys import api_token

        port = _pick_port(_port_of(self.settings.cloud_bind, 8050))
        bind = f"{HOST}:{port}"
        self.settings = self.settings.replace(cloud_bind=bind, cloud_url=f"http://{bind}",
                                              cloud_db=self.settings.cloud_db_url)
        if self.tls:
            files = site_tls(self.data_dir)
            self.settings = self.settings.replace(
                cloud_url=f"https://{bind}", cloud_ca=str(files.ca), cloud_tls_cert=str(files.cert),
                cloud_tls_key=str(files.key))
        self.settings = self.settings.replace(api_token=api_token(self.settings))
        if self.with_flower:
            self.settings = self.settings.replace(flower_port=_pick_port(self.settings.flower_port))
        # Without the API token and Flower's password (settings.PRIVATE): a node has its
        # node token, Flower gets its own password in flower_environ.
        self._env = child_environ({**settings_environ(self.settings), "PYTHONUNBUFFERED": "1"})
        self._launch_cloud()

    def _launch_cloud(self) -> None:
        from dmg.cloud.server import start_cloud_subprocess

        self._echo(f"starting the cloud on {self.settings.cloud_url}")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._cloud = start_cloud_subprocess(self.settings, bind=self.settings.cloud_bind,
                                             db=self.settings.cloud_db_url,
                                             log_path=self.log_dir / "cloud.log",
                                             timeout=self.startup_timeout)
        self._record_pids()

    def _stop_cloud(self) -> None:
        """Stop the cloud (SIGTERM, then SIGKILL for its group); nothing if it is stopped."""
        if self._cloud is not None:
            self._cloud.stop(timeout=15)
            kill_group(self._cloud.pid)
            self._cloud = None

    def _register_node(self, name: str) -> None:
        """Register ``name`` (keeping a registration the cloud already knows)."""
        register_node(self.settings, name, gateway=self.gateway, key=self.gateway_keys["key1"],
                      echo=self._echo)

    def _start_node(self, name: str) -> None:
        args = [self.node_python or sys.executable, "-m", "dmg.cli", "node", "start", "--name", name]
        if self.node_concurrency:
            args += ["--concurrency", str(self.node_concurrency)]
        self._echo(f"starting {name}")
        self._spawn(name, args, extra_env=self.node_environ.get(name))

    def _relaunch_node(self, name: str) -> None:
        """Start the dead node ``name`` again (its registration is kept)."""
        self._children = [c for c in self._children if c.name != name]
        self._start_node(name)

    def _start_flower(self) -> None:
        port = self.settings.flower_port
        env_extra = flower_environ(self.settings, self.gateway)
        self._echo(f"starting flower on {HOST}:{port}")
        tls = site_tls(self.data_dir) if self.tls else None
        child = self._spawn("flower", flower_command(HOST, port, tls=tls), extra_env=env_extra)
        self._wait_port(child, port)
        self.flower_url = f"{'https' if tls else 'http'}://{HOST}:{port}/"

    # -- helpers ---------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str], *, extra_env: dict[str, str] | None = None) -> Child:
        child = spawn(name, args, env={**self._env, **(extra_env or {})}, log_dir=self.log_dir)
        self._children.append(child)
        self._record_pids()
        return child

    def _wait_port(self, child: Child, port: int) -> None:
        try:
            wait_for_port(HOST, port, timeout=self.startup_timeout, proc=child.proc, what=child.name)
        except RuntimeError:
            self._died(child)
        except TimeoutError as exc:
            raise Fatal(str(exc), hint=f"see {child.log_path}") from None

    def _check_children(self) -> None:
        """Fatal if a child of the site exited."""
        for child in self._children:
            if not child.alive():
                self._died(child)

    def _died(self, child: Child) -> NoReturn:
        raise Fatal(f"{child.name} exited with code {child.proc.poll()}: {log_tail(child.log_path)}",
                    hint=f"see {child.log_path}")

    def describe(self) -> Iterator[str]:
        """Lines telling the user where everything is and what to try next."""
        yield f"data dir:   {self.data_dir}"
        token = "DMG_API_TOKEN" if self._token_given else str(self.data_dir / "cloud" / "api-token")
        yield f"API:        {self.api_url}   (token: {token})"
        yield f"portal:     {self.portal_url}   (sign in with the API token)"
        yield f"API docs:   {self.settings.cloud_url}/docs"
        if self.flower_url:
            yield (f"flower:     {self.flower_url}   (user {self.flower_user}, "
                   f"password in {self.flower_password_hint})")
        yield f"redis:      {self.settings.redis_url}   (password in {self.redis_password_hint})"
        if self.tls:
            yield f"TLS:        CA {self.settings.redis_tls_ca} (Redis TLS only, the cloud on HTTPS)"
        yield f"gateway:    {self.gateway}, nodes {', '.join(self.node_names)}"
        yield f"logs:       {self.log_dir}"
