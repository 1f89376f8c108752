"""Staged writes into a table: one transaction per staging id, fenced by a marker row.

Bytes written are spooled (memory, then a temporary file); :meth:`commit` parses
them and inserts the rows in batches inside ONE transaction that also inserts
``dmg_commits(staging_id, target)``. A replayed commit finds the marker row and
does nothing, so a shard copied twice never duplicates rows; two concurrent
commits of the same staging id serialise on the marker's primary key. The marker
holds the shard part of the staging id (:func:`dmg.ids.commit_key`):
every attempt of a shard shares it, so a shard replayed by a new attempt after a
crash inserts nothing a fenced older attempt already committed. The marker's
``target`` is the table, or for a key-range path the range itself
(:func:`marker_target`): one shard may hold several ranges of one table.
With ``create_table``, a commit that loses the race to create the missing table
with another commit raises ``Retryable`` (the retry finds the table).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Engine,
    Float,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
)
from sqlalchemy import exc as sa_exc

from dmg.connectors.base import StagedWriter
from dmg.connectors.sql.errors import map_sql_errors
from dmg.connectors.sql.paths import SqlPath, range_path
from dmg.connectors.sql.rows import coerce, csv_columns, decode_records
from dmg.errors import BadInput, NotFound, Retryable
from dmg.ids import commit_key

log = logging.getLogger(__name__)

MARKER_TABLE = "dmg_commits"
_SPOOL_IN_MEMORY = 8 * 1024 * 1024

marker_metadata = MetaData()
commits = Table(
    MARKER_TABLE, marker_metadata,
    Column("staging_id", String(255), primary_key=True),
    Column("target", String(255), primary_key=True),  # one staging id may fill several tables
    Column("committed_at", Float, nullable=False),
    Column("rows", BigInteger, nullable=False),
)


_MARKER_TARGET_MAX = 255


def marker_target(target: SqlPath) -> str:
    """What a commit marker names: the table path, or the key range (``t?id>=100&id<200``),
    so that each range a shard writes into one table commits once. A range longer than
    the marker column is shortened to the table path plus a digest of the range."""
    if not target.is_range:
        return target.table_path
    full = range_path(target.table_path, str(target.key), target.lower, target.upper)
    if len(full) <= _MARKER_TARGET_MAX:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()
    return f"{target.table_path[:_MARKER_TARGET_MAX - len(digest) - 2]}?#{digest}"


class _AlreadyCommitted(Exception):
    """The marker row exists: this staging id was committed before."""


def ensure_marker_table(engine: Engine, *, what: str) -> None:
    """Create ``dmg_commits`` if missing (idempotent, safe against a concurrent creator)."""
    with map_sql_errors(what):
        try:
            marker_metadata.create_all(engine, checkfirst=True)
        except (sa_exc.IntegrityError, sa_exc.ProgrammingError, sa_exc.OperationalError):
            # Another node created it between the check and the CREATE; verify.
            with engine.connect() as conn:
                conn.execute(select(commits.c.staging_id).limit(1)).all()


def _column_type(value: Any) -> Any:
    if isinstance(value, bool):
        return Boolean
    if isinstance(value, int):
        return BigInteger
    if isinstance(value, float):
        return Float
    if isinstance(value, dict | list):
        return JSON
    return Text


class SqlWriter(StagedWriter):
    """Spools bytes; :meth:`commit` inserts them in one fenced transaction."""

    def __init__(self, engine: Engine, target: SqlPath, *, staging_id: str, fmt: str,
                 batch_size: int, create_table: bool, what: str) -> None:
        if len(staging_id) > 255:
            raise BadInput(f"{what}: staging id longer than 255 characters")
        super().__init__(what)
        self._engine = engine
        self._target = target
        self._staging_id = commit_key(staging_id)
        self._fmt = fmt
        self._batch_size = batch_size
        self._create_table = create_table
        self._spool: Any = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
        self.rows_written = 0

    def _write(self, chunk: bytes) -> None:
        self._spool.write(chunk)

    def _commit(self, mtime: float | None) -> None:
        ensure_marker_table(self._engine, what=self.what)
        with map_sql_errors(self.what):
            try:
                with self._engine.begin() as conn:
                    self.rows_written = self._insert_all(conn)
            except _AlreadyCommitted:
                log.info("replayed commit ignored staging_id=%s target=%s",
                         self._staging_id, marker_target(self._target))
        self._spool.close()

    def _insert_all(self, conn: Any) -> int:
        target = marker_target(self._target)
        done = conn.execute(select(commits.c.rows).where(
            commits.c.staging_id == self._staging_id, commits.c.target == target)).first()
        if done is not None:
            raise _AlreadyCommitted
        try:
            # First, so that a concurrent replay waits on this row's lock, then sees it.
            conn.execute(commits.insert().values(staging_id=self._staging_id, target=target,
                                                 committed_at=time.time(), rows=0))
        except sa_exc.IntegrityError:
            raise _AlreadyCommitted from None
        self._spool.seek(0)
        header = csv_columns(self._spool, what=self.what) if self._fmt == "csv" else []
        self._spool.seek(0)
        records = decode_records(self._spool, self._fmt, what=self.what)
        table, records = self._table(conn, header, records)
        if table is None:
            return 0
        count = 0
        while batch := list(itertools.islice(records, self._batch_size)):
            conn.execute(table.insert(), [self._row(table, record, count + i)
                                          for i, record in enumerate(batch)])
            count += len(batch)
        conn.execute(commits.update().where(commits.c.staging_id == self._staging_id,
                                            commits.c.target == target).values(rows=count))
        return count

    def _table(self, conn: Any, header: list[str], records: Iterator[dict[str, Any]],
               ) -> tuple[Table | None, Iterator[dict[str, Any]]]:
        """The reflected target table (created from the data when allowed) and the records."""
        name, schema = str(self._target.table), self._target.schema
        try:
            return Table(name, MetaData(), autoload_with=conn, schema=schema), records
        except sa_exc.NoSuchTableError:
            if not self._create_table:
                raise NotFound(
                    f"{self.what}: table {self._target.table_path!r} does not exist",
                    hint="create it first, or set the store option create_table: true") from None
        columns: list[Column[Any]] = [Column(n, Text) for n in header]
        if self._fmt != "csv":
            first = next(records, None)
            if first is None:
                return None, records
            columns = [Column(k, _column_type(v)) for k, v in first.items()]
            records = itertools.chain([first], records)
        if not columns:
            return None, records
        table = Table(name, MetaData(), *columns, schema=schema)
        try:
            table.create(conn, checkfirst=True)
        except sa_exc.DBAPIError:
            if self._table_exists(name, schema):
                # Another commit created it since our check (two shards of one table): this
                # transaction is spoilt; the whole commit is retried and finds the table.
                raise Retryable(f"{self.what}: table {self._target.table_path!r} was created by "
                                "another commit at the same time", hint="it is retried by itself") from None
            raise
        return table, records

    def _table_exists(self, name: str, schema: str | None) -> bool:
        with contextlib.suppress(sa_exc.SQLAlchemyError), self._engine.connect() as other:
            return bool(inspect(other).has_table(name, schema=schema))
        return False

    def _row(self, table: Table, record: dict[str, Any], index: int) -> dict[str, Any]:
        row = {}
        for key, value in record.items():
            column = table.columns.get(key)
            if column is None:
                raise BadInput(f"{self.what}: column {key!r} does not exist in table "
                               f"{self._target.table_path!r}", hint="rename or drop it in the source")
            try:
                row[key] = coerce(value, column, from_text=self._fmt == "csv")
            except (ValueError, TypeError):
                raise BadInput(f"{self.what}: row {index + 1}, column {key!r}: the value is not "
                               f"a valid {column.type}") from None
        return row

    def _abort(self) -> None:
        self._spool.close()

