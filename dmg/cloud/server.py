"""Run the cloud: in this process (:func:`serve`) or as a child (:func:`start_cloud_subprocess`).

``start_cloud_subprocess`` is what ``dmg up`` and integration tests use::

    cloud = start_cloud_subprocess(settings, bind="127.0.0.1:0")   # 0 = a free port
    try:
        client = CloudClient(cloud.url, token=cloud.api_token)
        ...
    finally:
        cloud.stop()

The child is ``python -m dmg.cloud serve --bind HOST:PORT [--db URL] --settings-stdin``
(``settings.cloud_workers`` worker processes of its own in its process group);
it receives the parent's settings as JSON on its stdin (so secrets never show in
``ps`` or on disk) and is ready when ``GET /api/v1/health`` answers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
import psutil

from dmg.cloud.client import trust
from dmg.cloud.keys import api_token, cloud_dir
from dmg.errors import BadInput, Fatal
from dmg.procs import free_port, kill_group, stop_process
from settings import Settings


def parse_bind(bind: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> (host, port); BadInput if it is not one."""
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BadInput(f"bind address {bind!r} is not HOST:PORT", hint="for example 127.0.0.1:8050")
    return host.strip("[]"), int(port)


def serve(settings: Settings, *, bind: str, db: str | None = None) -> None:
    """Serve the cloud on ``bind`` until interrupted (blocking); ``db`` overrides the
    database URL. Migrations run before the port opens. ``settings.cloud_workers`` > 1
    serves it from that many processes (:mod:`dmg.cloud.workers`; PostgreSQL only,
    BadInput on SQLite)."""
    from dmg.cloud.workers import check_workers

    host, port = parse_bind(bind)
    if db:
        settings = settings.replace(cloud_db=db)
    workers = check_workers(settings)  # before anything is imported or logged
    tls = tls_files(settings)

    import uvicorn

    from dmg.cloud.api import create_app
    from dmg.cloud.db import Database
    from dmg.gcfreeze import keep_startup_objects

    # JSON lines: uvicorn's loggers propagate to the root handler (dmg.logformat) instead of
    # writing text through their own.
    extra: dict[str, Any] = {"log_config": None} if settings.log_format == "json" else {}
    options: dict[str, Any] = dict(
        host=host, port=port, log_level=settings.log_level.lower(), **extra,
        timeout_graceful_shutdown=3, access_log=False,
        ssl_certfile=tls[0] if tls else None, ssl_keyfile=tls[1] if tls else None)
    if workers == 1:
        app = create_app(settings)
        keep_startup_objects()  # built for the process's life: out of every later collection
        uvicorn.run(app, **options)
        return
    database = Database(settings.cloud_db_url)
    try:
        database.migrate()  # once, before any worker starts
    finally:
        database.dispose()
    _serve_workers(settings, workers, options)


def _serve_workers(settings: Settings, workers: int, options: dict[str, Any]) -> None:
    import functools
    import os

    from uvicorn import Config
    from uvicorn.supervisors import Multiprocess

    from dmg.cloud.workers import fresh_metrics_dir, worker_app

    metrics_dir = ""
    if settings.cloud_metrics:
        metrics_dir = fresh_metrics_dir(settings, os.getpid())
        # prometheus_client reads it when the workers import it (they are spawned after this).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # uvicorn.run(workers=N) takes only an import string; its supervisor takes any
    # picklable factory, which carries the settings to the workers (uvicorn 0.55).
    config = Config(functools.partial(worker_app, settings, metrics_dir), factory=True, workers=workers,
                    **options)
    try:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    finally:
        if metrics_dir:
            import shutil

            shutil.rmtree(metrics_dir, ignore_errors=True)


def tls_files(settings: Settings) -> tuple[str, str] | None:
    """The cloud's HTTPS certificate and key, or None for plain HTTP; BadInput when only
    one is given or a file is missing."""
    cert, key = settings.cloud_tls_cert, settings.cloud_tls_key
    if not cert and not key:
        return None
    if not (cert and key):
        raise BadInput("HTTPS needs both a certificate and its key",
                       hint="give --tls-cert and --tls-key (DMG_CLOUD_TLS_CERT, DMG_CLOUD_TLS_KEY)")
    for what, path in (("certificate", cert), ("key", key)):
        if not Path(path).is_file():
            raise BadInput(f"the cloud's TLS {what} {path} does not exist",
                           hint="give the path of a PEM file")
    return cert, key


def settings_to_json(settings: Settings) -> str:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        values[f.name] = str(value.resolve()) if isinstance(value, Path) else value
    return json.dumps(values)


def settings_from_json(text: str) -> Settings:
    values = json.loads(text)
    values["data_dir"] = Path(values["data_dir"])
    return Settings(**values)


@dataclass
class CloudProcess:
    """A cloud running as a child process."""

    url: str
    api_token: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, *, timeout: float = 10.0) -> int | None:
        """Stop the child (SIGTERM, then SIGKILL) and whatever it left in its process group
        (its workers, when it serves with several); safe to call twice."""
        code = stop_process(self.proc, timeout=timeout)
        kill_group(self.proc.pid)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_cloud_subprocess(settings: Settings, *, bind: str, db: str | None = None,
                           log_path: Path | None = None, timeout: float = 30.0) -> CloudProcess:
    """Start ``python -m dmg.cloud serve`` and return once it answers /api/v1/health.

    A port of 0 in ``bind`` picks a free one. The log goes to ``log_path`` (default
    ``<data_dir>/cloud/cloud.log``). Raises Fatal (with the log's tail) if the child
    exits or does not answer within ``timeout`` s; the child is stopped then.
    """
    host, port = parse_bind(bind)
    if port == 0:
        port = free_port(host)
    token = api_token(settings)  # created here first, so parent and child agree
    log_path = log_path or cloud_dir(settings) / "cloud.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - closed by CloudProcess.stop
    args = [sys.executable, "-m", "dmg.cloud", "serve", "--bind", f"{host}:{port}", "--settings-stdin"]
    if db:
        args += ["--db", db]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url_host = f"[{host}]" if ":" in host else host
    scheme = "https" if tls_files(settings) else "http"
    cloud = CloudProcess(url=f"{scheme}://{url_host}:{port}", api_token=token, proc=proc, log_path=log_path,
                         _log=log)
    try:
        assert proc.stdin is not None
        proc.stdin.write(settings_to_json(settings).encode())
        proc.stdin.close()
        _wait_healthy(cloud, timeout=timeout, ca=settings.cloud_ca)
    except BaseException:
        cloud.stop()
        raise
    return cloud


def port_of(url: str) -> int:
    return urlsplit(url).port or (443 if url.startswith("https:") else 80)


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` or one of its children listens on ``port`` (uvicorn's
    workers share their parent's socket)."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.Error:
        return False
    for proc in family:
        with contextlib.suppress(psutil.Error):
            if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                   for c in proc.net_connections(kind="tcp")):
                return True
    return False


def _wait_healthy(cloud: CloudProcess, *, timeout: float, ca: str = "") -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0, verify=trust(ca)) as http:
        while time.monotonic() < deadline:
            if cloud.proc.poll() is not None:
                raise Fatal(f"the cloud exited with code {cloud.proc.returncode} while starting",
                            hint=f"see {cloud.log_path}:\n{cloud.log_tail()}")
            try:
                # Healthy, and served by this child: another site's cloud on the port (taken
                # between the pick and the bind) answers too, and its tokens are not ours.
                if http.get(cloud.url + "/api/v1/health").status_code == 200 \
                        and _listens(cloud.proc.pid, port_of(cloud.url)):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise Fatal(f"the cloud did not answer at {cloud.url} within {timeout:.0f} s",
                hint=f"see {cloud.log_path}:\n{cloud.log_tail()}")
