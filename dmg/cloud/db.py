"""The cloud database: engine, sessions, and migrations applied at startup.

SQLite (the embedded default) and PostgreSQL (production, through psycopg 3) are
supported. On SQLite every write transaction starts with ``BEGIN IMMEDIATE`` so
that concurrent writers queue on the busy timeout instead of failing to upgrade
a read lock; reads use a plain deferred ``BEGIN``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from dmg.errors import BadInput

log = logging.getLogger(__name__)
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` / ``postgres://`` and pick psycopg 3; keep other URLs.

    Raises BadInput for a URL SQLAlchemy cannot parse or a backend dmg does not support.
    """
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise BadInput("the cloud database URL cannot be parsed",
                       hint="use sqlite:///PATH or postgresql://USER@HOST:PORT/DB") from exc
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise BadInput(f"the cloud database must be SQLite or PostgreSQL, not {parsed.get_backend_name()}",
                       hint="use sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
    return parsed.render_as_string(hide_password=False)


class Database:
    """One engine and its session factories. ``write()`` and ``read()`` yield sessions
    whose transaction is committed on success and rolled back on any exception."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                _private_file(Path(database))
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            _sqlite_transactions(self.engine)
        self._write = sessionmaker(bind=self.engine.execution_options(dmg_write=True),
                                   expire_on_commit=False)
        self._read = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._write_lock: AbstractContextManager[Any] = (
            threading.Lock() if self.dialect == "sqlite" else nullcontext())

    @contextmanager
    def write(self) -> Iterator[Session]:
        # SQLite has one writer at a time; queueing the writers of this process on a
        # lock is far cheaper than letting them poll in SQLite's busy handler.
        with self._write_lock, self._write() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    def publish(self, session: Session, channel: str, payload: str) -> None:
        """Tell every cloud process listening on ``channel`` (PostgreSQL NOTIFY, sent when
        ``session``'s transaction commits, never if it rolls back; :mod:`dmg.cloud.api.listen`).
        Nothing on SQLite: its one process wakes its own waiters."""
        if self.dialect == "postgresql":
            session.execute(text("SELECT pg_notify(:channel, :payload)"),
                            {"channel": channel, "payload": payload})

    @property
    def libpq_url(self) -> str:
        """The database URL as psycopg itself takes it (PostgreSQL only)."""
        return make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)

    def migrate(self) -> None:
        """Apply every migration up to head (idempotent)."""
        with self.engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        log.info("cloud database at head (%s)", self.dialect)

    def dispose(self) -> None:
        self.engine.dispose()


def _private_file(path: Path) -> None:
    """Create the SQLite file mode 0600 (its directory 0700 when created here) before
    SQLite opens it; SQLite gives its -wal and -shm files the same mode. An existing
    file keeps its mode."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _sqlite_transactions(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: never corrupts; a power cut may lose the last commits, which the
        # nodes re-send (their reports wait in an outbox until the cloud has them).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get("dmg_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
