"""A Redis Sentinel group for tests: a primary, a replica and three sentinels on 127.0.0.1.

:func:`start_sentinel_group` starts them on free ports (``redis-server`` for the
data nodes, ``redis-server <conf> --sentinel`` with a generated config for each
sentinel), with a quick failure detector (``down-after-milliseconds`` 1000) and
returns once every sentinel knows the replica and the two other sentinels, so a
failover can be voted. :meth:`SentinelGroup.kill_primary` SIGKILLs the primary;
:meth:`SentinelGroup.wait_failover` waits until the sentinels name the replica as
the new primary. :meth:`SentinelGroup.stop` stops every process (by its pid).

Fixture ``sentinel_group`` (function scope) yields a started group, with
``need_redis_binary()`` (skip locally, fail on CI) when ``redis-server`` is missing.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis as redis_lib

from dmg.embedded.redis import EmbeddedRedis, redis_binary
from dmg.procs import free_port, stop_process, wait_for_port
from tests.conftest import need_redis_binary
from tests.waiting import wait_for

HOST = "127.0.0.1"
MASTER_NAME = "dmgtest"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def sentinel_config(*, port: int, primary_port: int, directory: Path, quorum: int = 2) -> str:
    return "\n".join([
        f"port {port}",
        f"bind {HOST}",
        "protected-mode no",
        "daemonize no",
        f"dir {directory}",
        f"logfile {directory / f'sentinel-{port}.log'}",
        f"sentinel monitor {MASTER_NAME} {HOST} {primary_port} {quorum}",
        f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
        f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
        f"sentinel parallel-syncs {MASTER_NAME} 1",
        "",
    ])


@dataclass
class SentinelGroup:
    root: Path
    primary: EmbeddedRedis
    replica: EmbeddedRedis
    sentinel_ports: list[int]
    sentinels: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def master_name(self) -> str:
        return MASTER_NAME

    def url(self, db: int = 0) -> str:
        """The ``DMG_REDIS_URL`` of the group: ``sentinel://h:p;sentinel://h:p;.../db``."""
        return ";".join(f"sentinel://{HOST}:{port}" for port in self.sentinel_ports) + f"/{db}"

    def _ask(self, port: int, *command: str) -> object:
        client = redis_lib.Redis(host=HOST, port=port, socket_timeout=1, socket_connect_timeout=1,
                                 decode_responses=True)
        try:
            return client.execute_command(*command)
        finally:
            client.close()

    def primary_port(self) -> int | None:
        """The primary's port as a majority of the sentinels name it (None: no majority)."""
        named: list[int] = []
        for port in self.sentinel_ports:
            with contextlib.suppress(redis_lib.RedisError):
                answer = self._ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
                if isinstance(answer, list | tuple) and len(answer) == 2:
                    named.append(int(answer[1]))
        for candidate in set(named):
            if named.count(candidate) * 2 > len(self.sentinel_ports):
                return candidate
        return None

    def _ready(self) -> bool:
        for port in self.sentinel_ports:
            try:
                replicas = self._ask(port, "SENTINEL", "REPLICAS", MASTER_NAME)
                peers = self._ask(port, "SENTINEL", "SENTINELS", MASTER_NAME)
            except redis_lib.RedisError:
                return False
            if not replicas or not isinstance(peers, list) or len(peers) < len(self.sentinel_ports) - 1:
                return False
        return self.primary_port() == self.primary.port

    def start(self, *, timeout: float = 60.0) -> SentinelGroup:
        self.primary.start()
        self.replica.start()
        deadline = time.monotonic() + timeout
        replica = redis_lib.Redis(host=HOST, port=self.replica.port, decode_responses=True)
        try:
            wait_for(lambda: replica.info("replication").get("master_link_status") == "up",
                     timeout=timeout, interval=0.05, what="the replica to sync with the primary")
        finally:
            replica.close()
        for port in self.sentinel_ports:
            directory = self.root / f"sentinel-{port}"
            directory.mkdir(parents=True, exist_ok=True)
            conf = directory / "sentinel.conf"
            conf.write_text(sentinel_config(port=port, primary_port=self.primary.port, directory=directory))
            proc = subprocess.Popen([redis_binary(), str(conf), "--sentinel"], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            self.sentinels.append(proc)
            wait_for_port(HOST, port, timeout=timeout, proc=proc, what="redis sentinel")
        # Every sentinel sees the replica and its two peers: they learn of each other from hello
        # messages every 2 s and of the replica from the primary's INFO every 10 s, so a
        # loaded machine can take tens of seconds (a 30 s limit failed once in CI).
        wait_for(self._ready, timeout=max(deadline - time.monotonic(), 0),
                 what="the sentinels to discover each other and the replica")
        return self

    def kill_primary(self) -> int:
        """SIGKILL the primary (no AOF flush, no goodbye); returns its port."""
        assert self.primary.proc is not None
        stop_process(self.primary.proc, sig=signal.SIGKILL, timeout=5)
        self.primary.proc = None
        return self.primary.port

    def wait_failover(self, *, timeout: float = 30.0) -> int:
        """Wait until a majority of sentinels name the replica as primary; its port."""
        wait_for(lambda: self.primary_port() == self.replica.port, timeout=timeout, interval=0.05,
                 what="a failover to the replica")
        return self.replica.port

    def stop(self) -> None:
        for proc in self.sentinels:
            stop_process(proc, timeout=5)
        self.sentinels.clear()
        self.replica.stop()
        self.primary.stop()


def start_sentinel_group(root: Path) -> SentinelGroup:
    """A started group under ``root``; everything is stopped again if it does not start."""
    primary_port = free_port()
    group = SentinelGroup(
        root=root,
        primary=EmbeddedRedis(root / "primary", primary_port),
        replica=EmbeddedRedis(root / "replica", free_port(),
                              extra_args=("--replicaof", HOST, str(primary_port))),
        sentinel_ports=[free_port() for _ in range(3)])
    try:
        return group.start()
    except BaseException:
        group.stop()
        raise


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    need_redis_binary()
    group = start_sentinel_group(tmp_path / "sentinel-group")
    try:
        yield group
    finally:
        group.stop()
