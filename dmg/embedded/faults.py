"""Fault hooks on an embedded site, for tests and benchmarks: :class:`SiteUnderTest`.

:class:`SiteUnderTest` is an :class:`~dmg.embedded.site.EmbeddedSite` that can also be
hurt and grown while it runs: kill a node as a machine that stops (SIGKILL to every
process of it at once), stop a node as SIGTERM does, start a node again, stop and start
the cloud or the site's Redis, add a node, and list the processes behind it all. The
production class (``dmg up``, ``dmg demo``) has none of these; tests (``tests/``) and
benchmarks (``bench/``, run without pytest) both use this one.

Each hook acts on real processes and returns once the act is done (a killed node's
processes are gone, a started Redis listens); it does not wait for the site to recover:
that is what the caller measures.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess

import psutil

from dmg.embedded.children import Child
from dmg.embedded.pidbook import descendants
from dmg.embedded.site import HOST, EmbeddedSite
from dmg.errors import Conflict, NotFound
from dmg.procs import wait_then_kill


class SiteUnderTest(EmbeddedSite):
    """An embedded site with fault hooks (tests, chaos and failover runs)."""

    # -- what runs -------------------------------------------------------------------
    def children(self) -> list[Child]:
        """The processes the site started itself (nodes and Flower; not Redis, the cloud)."""
        return list(self._children)

    def pids(self) -> list[int]:
        """Every live process of the site: children, and everything they started."""
        found: set[int] = set()
        for proc in self._processes().values():
            if proc.poll() is None:
                found.add(proc.pid)
                found.update(descendants(proc.pid))
        return sorted(found)

    def node_pids(self, name: str) -> list[int]:
        """Every live process of node ``name``: ``dmg node start``, its worker and pool."""
        found: list[int] = []
        for child in self._children:
            if child.name == name and child.alive():
                found.append(child.proc.pid)
                with contextlib.suppress(psutil.Error):
                    found.extend(p.pid for p in psutil.Process(child.proc.pid).children(recursive=True))
        return found

    # -- nodes -----------------------------------------------------------------------
    def kill_node(self, name: str) -> list[int]:
        """SIGKILL every process of node ``name`` at once (a machine that stops); returns their
        pids. :meth:`start_node` brings the node back."""
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

    def stop_node(self, name: str, *, timeout: float = 75) -> None:
        """Stop node ``name`` as SIGTERM does (running shards finish first)."""
        for child in self._children:
            if child.name == name and child.alive():
                with contextlib.suppress(ProcessLookupError):
                    child.proc.terminate()
                wait_then_kill(child.proc, timeout=timeout)

    def start_node(self, name: str) -> None:
        """Start node ``name`` again after it died or was killed (its registration is kept)."""
        if name not in self.node_names:
            raise NotFound(f"this site has no node {name!r}", hint=f"its nodes: {', '.join(self.node_names)}")
        if any(c.name == name and c.alive() for c in self._children):
            raise Conflict(f"node {name} is running", hint="kill or stop it first")
        self._relaunch_node(name)

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

    # -- the cloud and the broker ------------------------------------------------------
    def stop_cloud(self) -> None:
        """Stop the cloud (SIGTERM); the nodes keep running and buffer their reports.
        :meth:`start_cloud` brings it back on the same address and database."""
        if self._cloud is not None:
            self._echo("stopping the cloud")
            self._stop_cloud()

    def start_cloud(self) -> None:
        """Start the cloud again after :meth:`stop_cloud` (same address, database, token)."""
        if self._cloud is None:
            self._launch_cloud()

    def stop_redis(self) -> None:
        """Stop the site's Redis with SIGTERM (it writes its AOF first); the nodes keep
        running and reconnect once :meth:`start_redis` brings it back. Conflict if the
        site uses an external broker."""
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

