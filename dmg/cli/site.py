"""An embedded site on one machine: Redis, the cloud, a gateway, N nodes, Flower.

:class:`EmbeddedSite` is what ``dmg up`` and ``dmg demo`` run, and what
integration tests use::

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
:meth:`EmbeddedSite.restart_child`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from dmg import registration as local_registration
from dmg.embedded.pidbook import PidBook, descendants, kill_survivors
from dmg.embedded.procs import (
    child_environ,
    free_port,
    kill_group,
    port_open,
    stop_group,
    wait_for_port,
    wait_then_kill,
)
from dmg.embedded.redis import EmbeddedRedis
from dmg.errors import Conflict, DmgError, Fatal, NotFound, Retryable
from settings import Settings, settings_environ

if TYPE_CHECKING:
    from dmg.cloud.client import CloudClient
    from dmg.cloud.server import CloudProcess

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


def flower_password(settings: Settings) -> str:
    """``settings.flower_password``, else the one generated once into the data dir (0600)."""
    if settings.flower_password:
        return settings.flower_password
    path = settings.data_dir / "flower-password"
    with contextlib.suppress(FileNotFoundError):
        existing = path.read_text().strip()
        if existing:
            return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return password


def _port_of(url: str, default: int) -> int:
    try:
        return urlsplit(url if "//" in url else f"//{url}").port or default
    except ValueError:
        return default


def _pick_port(wanted: int) -> int:
    return free_port(HOST) if port_open(HOST, wanted) else wanted


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def node_ready(row: dict[str, Any]) -> bool:
    """Whether a node (as ``list_nodes`` shows it) can take work: its worker is up and it
    is Online, or Limited only by stores it cannot reach (the dispatcher avoids those)."""
    if not row.get("limit"):
        return False
    if row.get("status") == "Online":
        return True
    stores = [str(s) for s in row.get("stores_unreachable") or []]
    if row.get("status") != "Limited" or not stores:
        return False
    about_stores = (*(f"store {s!r}" for s in stores), "cannot reach store(s) ")
    return all(str(reason).startswith(about_stores) for reason in row.get("reasons") or [])


@dataclasses.dataclass
class Child:
    """One process the site started."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None


class EmbeddedSite:
    """A whole site in child processes; start() it, stop() it, or use ``with``."""

    def __init__(self, settings: Settings, *, nodes: int = 2, gateway: str = "site", flower: bool = True,
                 node_concurrency: int | None = None, startup_timeout: float = 90.0,
                 echo: Callable[[str], None] | None = None,
                 node_environ: Mapping[str, Mapping[str, str]] | None = None,
                 external_broker: bool = False) -> None:
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
        return ("DMG_FLOWER_PASSWORD" if self.settings.flower_password
                else str(self.data_dir / "flower-password"))

    def client(self) -> CloudClient:
        """A user client of this site's cloud (close it, or use ``with``)."""
        from dmg.cloud.client import CloudClient

        return CloudClient(self.settings.cloud_url, token=self.settings.api_token)

    def children(self) -> list[Child]:
        return list(self._children)

    def pids(self) -> list[int]:
        """Every live process of the site: children, and everything they started."""
        found: set[int] = set()
        for proc in self._processes().values():
            if proc.poll() is None:
                found.add(proc.pid)
                found.update(descendants(proc.pid))
        return sorted(found)

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
            self.start_node(name)
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
            self._start_cloud()
            self._ensure_gateway()
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
        """Stop every process this site started, newest first; safe to call twice."""
        self._record_pids()
        everything = self._pids.snapshot()
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
        if self._cloud is not None:
            self._cloud.stop(timeout=15)
            kill_group(self._cloud.pid)
            self._cloud = None
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
        kill_survivors(everything, outlived="the site's stop")
        self._pids.forget()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

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

    def reap_leftovers(self) -> None:
        """Kill the processes of a site that was killed before it could stop them."""
        self._pids.reap_leftovers()

    def _start_redis(self) -> None:
        port = _pick_port(_port_of(self.settings.redis_url, 6479))
        self._echo(f"starting redis on {HOST}:{port}")
        redis = EmbeddedRedis(self.data_dir / "redis", port, host=HOST)
        self._redis = redis
        try:
            redis.start()
        except (RuntimeError, TimeoutError) as exc:
            raise Fatal(f"redis-server did not start: {exc}",
                        hint=f"see {self.data_dir / 'redis' / 'redis.log'}") from None
        self.settings = self.settings.replace(redis_url=redis.url)

    def _start_cloud(self) -> None:
        from dmg.cloud.keys import api_token

        port = _pick_port(_port_of(self.settings.cloud_bind, 8050))
        bind = f"{HOST}:{port}"
        self.settings = self.settings.replace(cloud_bind=bind, cloud_url=f"http://{bind}",
                                              cloud_db=self.settings.cloud_db_url)
        self.settings = self.settings.replace(api_token=api_token(self.settings))
        if self.with_flower:
            self.settings = self.settings.replace(flower_port=_pick_port(self.settings.flower_port))
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

    # -- outages (tests, chaos runs) ------------------------------------------------------
    def stop_cloud(self) -> None:
        """Stop the cloud (SIGTERM); the nodes keep running and buffer their reports.
        :meth:`start_cloud` brings it back on the same address and database."""
        if self._cloud is not None:
            self._echo("stopping the cloud")
            self._cloud.stop(timeout=15)
            kill_group(self._cloud.pid)
            self._cloud = None

    def start_cloud(self) -> None:
        """Start the cloud again after :meth:`stop_cloud` (same address, database, token)."""
        if self._cloud is None:
            self._launch_cloud()

    def stop_redis(self) -> None:
        """Stop the site's Redis with SIGTERM (it writes its AOF first); the nodes keep
        running and reconnect once :meth:`start_redis` brings it back."""
        if self._redis is None:
            raise Conflict("this site uses an external broker", hint="stop that broker yourself")
        self._echo("stopping redis")
        self._redis.stop()

    def start_redis(self) -> None:
        """Start the site's Redis again on the same port and data dir (its AOF is reloaded)."""
        if self._redis is None:
            raise Conflict("this site uses an external broker", hint="start that broker yourself")
        if not self._redis.running:
            self._echo(f"starting redis on {HOST}:{self._redis.port}")
            self._redis.start()
            self._record_pids()

    def node_pids(self, name: str) -> list[int]:
        """Every live process of node ``name``: ``dmg node start``, its worker and pool."""
        import psutil

        found: list[int] = []
        for child in self._children:
            if child.name == name and child.alive():
                found.append(child.proc.pid)
                with contextlib.suppress(psutil.Error):
                    found.extend(p.pid for p in psutil.Process(child.proc.pid).children(recursive=True))
        return found

    def kill_node(self, name: str) -> list[int]:
        """SIGKILL every process of node ``name`` at once (a machine that stops); returns their
        pids. :meth:`start_node` brings the node back."""
        import psutil

        self._record_pids()
        procs = []
        for pid in self.node_pids(name):
            with contextlib.suppress(psutil.Error):
                procs.append(psutil.Process(pid))
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)
        psutil.wait_procs(procs, timeout=10)
        for child in self._children:
            if child.name == name:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(timeout=5)
        return [p.pid for p in procs]

    def start_node(self, name: str) -> None:
        """Start node ``name`` again after it died or was killed (its registration is kept)."""
        if name not in self.node_names:
            raise NotFound(f"this site has no node {name!r}", hint=f"its nodes: {', '.join(self.node_names)}")
        if any(c.name == name and c.alive() for c in self._children):
            raise Conflict(f"node {name} is running", hint="kill or stop it first")
        self._children = [c for c in self._children if c.name != name]
        self._start_node(name)

    def add_node(self, name: str, *, wait: bool = True) -> None:
        """Register and start one more node on the running site, as ``dmg node register``
        and ``dmg node start`` do on a new machine (a registration the cloud and the data
        dir already hold is kept). With ``wait``, return once it can take work (see
        :meth:`wait_nodes_online`); Conflict if the site has a node of that name."""
        if name in self.node_names:
            raise Conflict(f"this site already has a node {name!r}", hint="pick another name")
        self._register_node(name)
        self.node_names.append(name)
        self._start_node(name)
        if wait:
            self.wait_nodes_online(timeout=self.startup_timeout)
            self._record_pids()

    def stop_node(self, name: str, *, timeout: float = 75) -> None:
        """Stop node ``name`` as SIGTERM does (running shards finish first)."""
        for child in self._children:
            if child.name == name and child.alive():
                with contextlib.suppress(ProcessLookupError):
                    child.proc.terminate()
                wait_then_kill(child.proc, timeout=timeout)

    def _ensure_gateway(self) -> None:
        with self.client() as client:
            try:
                client.gateway(self.gateway)
            except NotFound:
                self._echo(f"creating gateway {self.gateway}")
                client.create_gateway(self.gateway)
            keys = client.gateway_keys(self.gateway)
        self.gateway_keys = {"key1": str(keys["key1"]), "key2": str(keys["key2"])}

    def _register_node(self, name: str) -> None:
        """Register ``name`` (keeping a registration the cloud already knows)."""
        from dmg.cloud.client import CloudClient
        from dmg.version import __version__

        cloud_url = self.settings.cloud_url
        try:
            local: local_registration.NodeRegistration | None = local_registration.load(self.data_dir, name)
        except (NotFound, DmgError):
            local = None
        with CloudClient(cloud_url) as client:
            try:
                body = client.register_node(key=self.gateway_keys["key1"], name=name, version=__version__)
            except Conflict:
                if local is not None and local.gateway == self.gateway:
                    if local.cloud_url != cloud_url:
                        local_registration.save(self.data_dir,
                                                dataclasses.replace(local, cloud_url=cloud_url))
                    return
                with self.client() as user:  # known to the cloud, but its token is lost here
                    user.remove_node(self.gateway, name)
                body = client.register_node(key=self.gateway_keys["key1"], name=name, version=__version__)
        local_registration.save(self.data_dir, local_registration.NodeRegistration(
            cloud_url=cloud_url, gateway=str(body["gateway"]), node=str(body.get("node") or name),
            token=str(body["token"]), gateway_id=str(body.get("gateway_id") or "")))
        self._echo(f"registered {name} to gateway {self.gateway}")

    def _start_node(self, name: str) -> None:
        args = [sys.executable, "-m", "dmg.cli", "node", "start", "--name", name]
        if self.node_concurrency:
            args += ["--concurrency", str(self.node_concurrency)]
        self._echo(f"starting {name}")
        self._spawn(name, args, extra_env=self.node_environ.get(name))

    def _start_flower(self) -> None:
        port = self.settings.flower_port
        env_extra = {"FLOWER_BASIC_AUTH": f"{self.settings.flower_user}:{flower_password(self.settings)}",
                     "DMG_GATEWAY": self.gateway}  # Flower watches this gateway's Celery keys
        self._echo(f"starting flower on {HOST}:{port}")
        child = self._spawn("flower", [sys.executable, "-m", "celery", "-A", "workers.app", "flower",
                                       f"--address={HOST}", f"--port={port}"], extra_env=env_extra)
        self._wait_port(child, port)
        self.flower_url = f"http://{HOST}:{port}/"

    def wait_nodes_online(self, *, timeout: float) -> list[dict[str, Any]]:
        """Poll the cloud until every node of the site is up: Online, or Limited only
        because it cannot reach some stores (work needing them goes elsewhere), with its
        worker up (a job limit above 0, so the dispatcher can place work on it); Fatal
        with reasons if not."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        with self.client() as client:
            while True:
                for child in self._children:
                    if not child.alive():
                        self._died(child)
                with contextlib.suppress(Retryable):
                    rows = client.list_nodes(self.gateway)
                status = {str(r.get("name")): r for r in rows}
                late = [n for n in self.node_names if not node_ready(status.get(n, {}))]
                if not late:
                    return rows
                if time.monotonic() > deadline:
                    late = [f"{n}: {status.get(n, {}).get('status', 'unknown')}, "
                            f"limit {status.get(n, {}).get('limit', 0)} "
                            f"{status.get(n, {}).get('reasons') or ''}".strip() for n in late]
                    raise Fatal(f"nodes not Online after {timeout:.0f} s: {'; '.join(late)}",
                                hint=f"see the logs in {self.log_dir}")
                time.sleep(0.2)

    # -- helpers ---------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str], *, extra_env: dict[str, str] | None = None) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env={**self._env, **(extra_env or {})}, start_new_session=True)
        child = Child(name, proc, log_path)
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

    def _died(self, child: Child) -> NoReturn:
        raise Fatal(f"{child.name} exited with code {child.proc.poll()}: {_tail(child.log_path)}",
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
        yield f"redis:      {self.settings.redis_url}"
        yield f"gateway:    {self.gateway}, nodes {', '.join(self.node_names)}"
        yield f"logs:       {self.log_dir}"
