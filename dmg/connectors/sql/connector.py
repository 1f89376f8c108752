"""The ``sql`` store's connector: tables and named queries of one database."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, BinaryIO

from sqlalchemy import Column, MetaData, Select, Table, create_engine, delete, func, inspect, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql.elements import ColumnElement

from dmg.connectors._support import ChunkStream, buffered
from dmg.connectors.base import Connector, Entry, StagedWriter, StoreSpec
from dmg.connectors.sql.errors import map_sql_errors
from dmg.connectors.sql.location import database_url
from dmg.connectors.sql.paths import QUERY_PREFIX, SqlPath, parse_path, range_path
from dmg.connectors.sql.rows import FORMATS, encode_header, encode_rows
from dmg.connectors.sql.writer import MARKER_TABLE, SqlWriter
from dmg.errors import BadInput, NotFound

UNKNOWN_SIZE = -1


class SqlConnector(Connector):
    """A database reached through SQLAlchemy; see :mod:`dmg.connectors.sql` for the contract."""

    type = "sql"

    def __init__(self, spec: StoreSpec, *, credential: Mapping[str, str] | None = None) -> None:
        super().__init__(spec)
        opts = spec.options
        self.url = database_url(spec.location, store=spec.name, credential=credential)
        self.format = str(opts.get("format", "csv")).lower()
        if self.format not in FORMATS:
            raise BadInput(f"store {spec.name!r}: unknown format {self.format!r}",
                           hint=f"use one of: {', '.join(FORMATS)}")
        queries = opts.get("queries") or {}
        if not isinstance(queries, dict) or not all(isinstance(q, str) for q in queries.values()):
            raise BadInput(f"store {spec.name!r}: option queries must map names to SQL text")
        self.queries: dict[str, str] = dict(queries)
        self.schema: str | None = opts.get("schema")
        self.shard_key: str | None = opts.get("shard_key")
        try:
            self.batch_size = int(opts.get("batch_size", 1000))
            self.rows_per_shard = int(opts.get("rows_per_shard", 0))
            connect_timeout = int(opts.get("connect_timeout", 10))
        except (TypeError, ValueError):
            raise BadInput(f"store {spec.name!r}: batch_size, rows_per_shard and connect_timeout "
                           "must be integers") from None
        if self.batch_size <= 0:
            raise BadInput(f"store {spec.name!r}: batch_size must be positive")
        self.create_table = bool(opts.get("create_table", False))
        connect_args: dict[str, Any] = {}
        if self.url.get_backend_name() == "postgresql":
            connect_args["connect_timeout"] = connect_timeout
        with map_sql_errors(f"store {spec.name!r}"):
            self.engine = create_engine(self.url, pool_pre_ping=True, connect_args=connect_args)

    # -- helpers --------------------------------------------------------------------
    def _what(self, verb: str, path: str) -> str:
        return f"cannot {verb} {path!r} in store {self.spec.name!r}"

    def _parse(self, path: str) -> SqlPath:
        parsed = parse_path(path, store=self.spec.name)
        if parsed.query is not None and parsed.query not in self.queries:
            raise NotFound(f"store {self.spec.name!r} has no query named {parsed.query!r}",
                           hint="add it to the store's options.queries")
        if parsed.table is not None and parsed.schema is None and self.schema:
            parsed = SqlPath(parsed.raw, table=parsed.table, schema=self.schema, key=parsed.key,
                             lower=parsed.lower, upper=parsed.upper)
        return parsed

    def _reflect(self, conn: Any, parsed: SqlPath) -> Table:
        try:
            return Table(str(parsed.table), MetaData(), autoload_with=conn, schema=parsed.schema)
        except sa_exc.NoSuchTableError:
            raise NotFound(f"table {parsed.table_path!r} does not exist in store {self.spec.name!r}",
                           hint="check the table name (and the store's schema option)") from None

    def _entry(self, path: str) -> Entry:
        return Entry(path, UNKNOWN_SIZE, time.time())

    def _select(self, table: Table, parsed: SqlPath) -> Select[Any]:
        stmt = select(table)
        order = list(table.primary_key.columns)
        if parsed.is_range:
            column = self._column(table, str(parsed.key))
            stmt = stmt.where(*self._range_clauses(column, parsed))
            order = [column, *(c for c in order if c is not column)]
        elif self.shard_key and self.shard_key in table.columns and not order:
            order = [table.columns[self.shard_key]]
        return stmt.order_by(*order) if order else stmt

    def _column(self, table: Table, key: str) -> Column[Any]:
        column = table.columns.get(key)
        if column is None:
            raise BadInput(f"store {self.spec.name!r}: table {table.name!r} has no column {key!r}")
        return column

    def _range_clauses(self, column: Column[Any], parsed: SqlPath) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if parsed.lower is not None:
            clauses.append(column >= _key_value(column, parsed.lower, store=self.spec.name))
        if parsed.upper is not None:
            below = column < _key_value(column, parsed.upper, store=self.spec.name)
            clauses.append(below if parsed.lower is not None else (below | column.is_(None)))
        return clauses

    # -- primitives -----------------------------------------------------------------
    def list(self, prefix: str = "") -> Iterator[Entry]:
        """One entry per table (per key range when sharding is set) and per named query.

        A non-empty ``prefix`` is one path: that table (its ranges), query or range;
        ``NotFound`` when it does not exist. Sizes are unknown (``-1``).
        """
        what = self._what("list", prefix or "/")
        if prefix.strip("/"):
            parsed = self._parse(prefix)
            if parsed.query is not None or parsed.is_range:
                self.stat(prefix)
                yield self._entry(prefix.strip().strip("/"))
                return
            tables = [parsed]
        else:
            with map_sql_errors(what), self.engine.connect() as conn:
                names = inspect(conn).get_table_names(schema=self.schema)
            tables = [self._parse(n) for n in sorted(names) if n != MARKER_TABLE]
        entries: list[Entry] = []
        with map_sql_errors(what), self.engine.connect() as conn:
            for parsed in tables:
                table = self._reflect(conn, parsed)
                entries.extend(self._entry(p) for p in self._table_paths(conn, table, parsed))
        if not prefix.strip("/"):
            entries.extend(self._entry(f"{QUERY_PREFIX}{q}") for q in sorted(self.queries))
        yield from sorted(entries, key=lambda e: e.path)

    def _table_paths(self, conn: Any, table: Table, parsed: SqlPath) -> Sequence[str]:
        """The table's path, or one path per key range of about ``rows_per_shard`` rows."""
        whole = parsed.table_path if parsed.schema != self.schema else str(parsed.table)
        if not (self.shard_key and self.rows_per_shard > 0):
            return [whole]
        key = self._column(table, self.shard_key)
        numbered = select(key.label("k"), func.row_number().over(order_by=key).label("n")) \
            .where(key.is_not(None)).subquery()
        bounds_query = select(numbered.c.k).where((numbered.c.n - 1) % self.rows_per_shard == 0) \
            .order_by(numbered.c.k)
        bounds = list(dict.fromkeys(_key_text(v) for (v,) in conn.execute(bounds_query)))
        if len(bounds) < 2:
            return [whole]
        edges: list[str | None] = [None, *bounds[1:], None]
        return [range_path(whole, self.shard_key, lo, hi) for lo, hi in itertools.pairwise(edges)]

    def stat(self, path: str) -> Entry:
        parsed = self._parse(path)
        if parsed.table is not None:
            with map_sql_errors(self._what("stat", path)), self.engine.connect() as conn:
                table = self._reflect(conn, parsed)
                if parsed.is_range:
                    self._range_clauses(self._column(table, str(parsed.key)), parsed)
        return self._entry(path.strip().strip("/"))

    def open_read(self, path: str, *, offset: int = 0) -> BinaryIO:
        """The rows as CSV (header line first) or JSON Lines, streamed with a server-side cursor.

        Rows come in primary-key order (range key first), so an ``offset`` taken
        from an earlier read of unchanged data resumes at the same byte.
        """
        parsed = self._parse(path)
        what = self._what("read", path)
        chunks = self._chunks(parsed, what)
        with map_sql_errors(what):
            first = next(chunks)  # runs the query now: a missing table fails here, not mid-copy
        stream = ChunkStream(itertools.chain([first], chunks), lambda: map_sql_errors(what), skip=offset,
                             on_close=chunks.close)
        return buffered(stream)

    def _chunks(self, parsed: SqlPath, what: str) -> Generator[bytes, None, None]:
        with self.engine.connect() as conn:
            if parsed.query is not None:
                stmt: Any = text(self.queries[parsed.query])
            else:
                stmt = self._select(self._reflect(conn, parsed), parsed)
            streaming = conn.execution_options(stream_results=True, yield_per=self.batch_size)
            result = streaming.execute(stmt)
            columns = list(result.keys())
            yield encode_header(columns, self.format)
            for rows in result.partitions():
                yield encode_rows(columns, rows, self.format)

    def open_write(self, path: str, *, staging_id: str) -> StagedWriter:
        """Rows parsed from CSV or JSON Lines, inserted on commit in one transaction.

        A key-range path writes into its table. ``NotFound`` at commit when the
        table is missing, unless the store option ``create_table`` is set.
        """
        parsed = self._parse(path)
        if parsed.query is not None:
            raise BadInput(f"store {self.spec.name!r}: query {parsed.query!r} is read-only",
                           hint="write to a table name")
        return SqlWriter(self.engine, parsed, staging_id=staging_id, fmt=self.format,
                         batch_size=self.batch_size, create_table=self.create_table,
                         what=self._what("write", path))

    def delete(self, path: str) -> None:
        """Delete the table's rows (those of the key range); the table itself stays.

        Deleting from a missing table is not an error.
        """
        parsed = self._parse(path)
        if parsed.query is not None:
            raise BadInput(f"store {self.spec.name!r}: query {parsed.query!r} is read-only")
        with map_sql_errors(self._what("delete", path)), self.engine.begin() as conn:
            try:
                table = self._reflect(conn, parsed)
            except NotFound:
                return
            stmt = delete(table)
            if parsed.is_range:
                stmt = stmt.where(*self._range_clauses(self._column(table, str(parsed.key)), parsed))
            conn.execute(stmt)

    def check_reachable(self) -> None:
        with map_sql_errors(f"store {self.spec.name!r}"), self.engine.connect() as conn:
            conn.execute(text("SELECT 1")).all()

    def close(self) -> None:
        self.engine.dispose()


def _key_text(value: Any) -> str:
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def _key_value(column: Column[Any], value: str, *, store: str) -> Any:
    """A range bound from its path text, typed like ``column``."""
    try:
        kind = column.type.python_type
    except NotImplementedError:
        return value
    try:
        if kind is int:
            return int(value)
        if kind is float:
            return float(value)
        if kind is Decimal:
            return Decimal(value)
        if kind is dt.datetime:
            return dt.datetime.fromisoformat(value)
        if kind is dt.date:
            return dt.date.fromisoformat(value)
    except (ValueError, ArithmeticError):
        raise BadInput(f"store {store!r}: {value!r} is not a valid {column.type} for "
                       f"column {column.name!r}") from None
    return value
