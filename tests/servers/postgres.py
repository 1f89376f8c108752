"""A PostgreSQL 15 server for tests: ``initdb`` + ``pg_ctl`` on a free 127.0.0.1 port.

Fixture ``postgres_url`` (session): a fresh database on a throw-away cluster, as a
``postgresql://`` URL; the server is stopped and its files removed at the end.
Import it into a ``conftest.py`` to use it. As root, the cluster runs as the
``postgres`` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dmg.procs import free_port
from tests.conftest import require

BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"


@dataclass
class PostgresServer:
    root: Path
    port: int
    run_as: str | None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _command(self, *args: str) -> list[str]:
        if self.run_as:
            return ["runuser", "-u", self.run_as, "--", *args]
        return list(args)

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run(self._command(*args), capture_output=True, text=True, timeout=timeout,
                                cwd=self.root, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr.strip()[-800:]}")

    def start(self) -> PostgresServer:
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(str(BIN / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                  "-E", "UTF8", "--no-sync", "--locale=C")
        return self.start_again()

    def start_again(self) -> PostgresServer:
        """Start the cluster's postmaster (after :meth:`stop`, as after :meth:`start`)."""
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-o", options,
                  "-l", str(self.root / "postgres.log"), "-w", "-t", "60", "start")
        return self

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the postmaster (fast shutdown), by its pid if pg_ctl cannot."""
        try:
            self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
        except (RuntimeError, subprocess.TimeoutExpired):
            pid_file = self.data / "postmaster.pid"
            with contextlib.suppress(OSError, ValueError, ProcessLookupError):
                os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGKILL)


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError:
        return ""
    return SUPERUSER


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    require((BIN / "initdb").exists() and (BIN / "pg_ctl").exists(),
            f"PostgreSQL 15 is not installed in {BIN} (apt-get install postgresql)")
    run_as = _run_as()
    require(run_as != "" and (run_as is None or shutil.which("runuser") is not None),
            "running as root needs a 'postgres' user and runuser to start PostgreSQL")
    root = Path(tempfile.mkdtemp(prefix="dmg-pg-"))
    server = PostgresServer(root=root, port=free_port(), run_as=run_as or None)
    try:
        server.start()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        require(False, f"PostgreSQL did not start: {exc}")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """A database on the session's PostgreSQL server, as a ``postgresql://`` URL."""
    return postgres_server.create_database("dmg_test")
