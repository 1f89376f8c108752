"""The per-file report of activity runs: what each shard's latest attempt did to each file.

Workers post their file results in batches (:func:`record_file_results`),
idempotently: a file is one row per shard and sink path, replaced by a re-post
or by a newer attempt, refused (StaleAttempt) from an attempt older than the
shard's. Users download a run's report as JSON Lines (:func:`report_lines`),
ordered by activity, shard and path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from dmg.cloud.models import ActivityRun, FileRecord, Run, Shard
from dmg.cloud.schemas import FileResults
from dmg.cloud.service import attempts, dispatch
from dmg.cloud.service.gateways import NodeIdentity
from dmg.errors import NotFound, StaleAttempt

#: A path of at most this many characters is its own key (:func:`path_key`).
KEY_PATH_CHARS = 256


def path_key(path: str) -> str:
    """The key of ``path`` in a shard's file results: the path itself, or, for a path longer
    than :data:`KEY_PATH_CHARS`, its first KEY_PATH_CHARS characters, ``:`` and its sha256
    (hex). Two paths have one key only if they are one path (the two forms differ in length),
    a key takes 1,089 bytes at most (PostgreSQL's index entry takes 2,704), and a shard's
    rows, which arrive in path order, enter the unique index in that order: a batch dirties
    a few of its pages, not one per row as sha256 keys did."""
    if len(path) <= KEY_PATH_CHARS:
        return path
    return f"{path[:KEY_PATH_CHARS]}:{hashlib.sha256(path.encode('utf-8', 'surrogatepass')).hexdigest()}"


def record_file_results(session: Session, node: NodeIdentity, shard_id: str, body: FileResults, *,
                        now: float, defer: bool = False) -> dict[str, Any]:
    """Store a batch of a shard's file results; -> ``{recorded: n}``.

    NotFound for a shard of another gateway; StaleAttempt when a newer attempt of
    the shard was reported. The rows go in one INSERT ... ON CONFLICT DO UPDATE
    (executemany): a path already recorded is replaced by a re-post or a newer attempt,
    never by an older one, and two writers of one path queue in the database instead of
    failing. ``defer``: keep the rows for :func:`write_deferred` (a report batch writes
    the file results of all its items in one statement, at its end).
    """
    shard = session.get(Shard, shard_id)
    if shard is None or shard.activity_run.gateway_id != node.gateway_id:
        # Another gateway's shard gets the very answer of one that does not exist.
        raise dispatch.missing_shard(session, node, shard_id)
    if body.attempt < shard.attempt:
        raise StaleAttempt(f"shard {shard_id!r} attempt {body.attempt} was replaced by attempt "
                           f"{shard.attempt}", hint="its file results no longer count")
    attempts.check_worker(shard.id, body.attempt, node, attempts.attempt_row(session, shard, body.attempt),
                          named=body.node)
    rows = file_rows(shard.activity_run_id, shard_id, body, node, now=now)
    if defer:
        session.info.setdefault(DEFERRED, []).extend(rows)
    else:
        upsert(session, rows)
    return {"recorded": len(rows)}


#: The ``file_results`` columns a row of :func:`file_rows` holds, in the table's order
#: (:func:`_upsert_sql` checks it).
ROW_COLUMNS = ("activity_run_id", "shard_id", "path", "path_key", "source", "bytes", "checksum", "status",
               "verified", "error", "node", "attempt", "tries", "started_at", "ended_at", "recorded_at")
#: A ``file_results`` row: plain values in :data:`ROW_COLUMNS` order.
FileRow = tuple[Any, ...]


def file_rows(activity_run_id: str, shard_id: str, body: FileResults, node: NodeIdentity, *,
              now: float) -> list[FileRow]:
    """The ``file_results`` rows of ``body`` (checked): one per path, the last one sent
    counting (its ``rows`` after its ``files``); the node is the token's, never the body's."""
    reporter = node.node
    attempt = body.attempt
    # Both forms as wire rows (dmg.cloud.filerows.ROW_FIELDS order); a path sent twice: the last counts.
    latest = {path_key(f.path): (f.path, f.source, f.bytes, f.checksum, f.status, f.verified, f.error,
                                  f.tries, f.started, f.ended) for f in body.files}
    latest.update((path_key(row[0]), row) for row in body.rows)
    return [(activity_run_id, shard_id, path, key, source, size, checksum, status, verified, error,
             reporter, attempt, tries, started, ended, now)
            for key, (path, source, size, checksum, status, verified, error, tries, started, ended)
            in latest.items()]


def upsert(session: Session, rows: list[FileRow]) -> None:
    """Write ``file_results`` rows in one INSERT ... ON CONFLICT DO UPDATE (executemany),
    on the session's connection, in its transaction."""
    if not rows:
        return
    sql = _upsert_sql(session)
    # The DBAPI cursor's own executemany of plain tuples: SQLAlchemy 2.1.9's executemany
    # builds and processes a parameter dict per row (construct_params: ~5.5 us of the
    # cloud's ~15 us per file row); these columns have no bind processor to skip.
    cursor = session.connection().connection.cursor()
    try:
        cursor.executemany(sql, rows)
    finally:
        cursor.close()


DEFERRED = "dmg_file_rows"
_UPSERTS: dict[str, str] = {}


def write_deferred(session: Session) -> int:
    """Write the rows :func:`record_file_results` kept (``defer``) in one statement -> their number."""
    rows: list[FileRow] = session.info.pop(DEFERRED, [])
    upsert(session, rows)
    return len(rows)


def _upsert_sql(session: Session) -> str:
    """``INSERT INTO file_results ... ON CONFLICT (shard_id, path_key) DO UPDATE`` unless
    the stored row is of a newer attempt, with positional parameters in :data:`ROW_COLUMNS`
    order; compiled once per dialect (SQLite, PostgreSQL)."""
    dialect = session.get_bind().dialect
    sql = _UPSERTS.get(dialect.name)
    if sql is None:
        insert_of = postgresql_insert if dialect.name == "postgresql" else sqlite_insert
        table = cast(Table, FileRecord.__table__)
        statement = insert_of(table).inline().values({name: bindparam(name) for name in ROW_COLUMNS})
        replaced = {column.name: statement.excluded[column.name] for column in table.columns
                    if column.name not in ("id", "activity_run_id", "shard_id", "path_key")}
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.shard_id, table.c.path_key], set_=replaced,
            where=table.c.attempt <= statement.excluded.attempt)
        # Positional parameters (SQLite "?", psycopg "%s"), checked to be in ROW_COLUMNS order.
        dialect_class: Any = type(dialect)  # DefaultDialect takes paramstyle; mypy sees Dialect's stub
        positional = dialect_class(paramstyle="qmark" if dialect.name == "sqlite" else "format")
        compiled = statement.compile(dialect=positional)
        if tuple(compiled.positiontup or ()) != ROW_COLUMNS:
            raise RuntimeError(f"file_results upsert binds {compiled.positiontup}, not {ROW_COLUMNS}")
        sql = _UPSERTS[dialect.name] = str(compiled)
    return sql


def check_run(session: Session, run_id: str) -> None:
    if session.get(Run, run_id) is None:
        raise NotFound(f"run {run_id!r} does not exist", hint="list runs with `dmg runs list`")


def report_rows(session: Session, run_id: str, *, status: str | None = None,
                batch: int = 1000) -> Iterator[dict[str, Any]]:
    """The run's file results, by activity position, shard index and path."""
    query = (select(FileRecord, ActivityRun.name, Shard.index)
             .join(Shard, FileRecord.shard_id == Shard.id)
             .join(ActivityRun, FileRecord.activity_run_id == ActivityRun.id)
             .where(ActivityRun.run_id == run_id)
             .order_by(ActivityRun.position, Shard.index, FileRecord.path)
             .execution_options(yield_per=batch))
    if status:
        query = query.where(FileRecord.status == status)
    for row, activity, index in session.execute(query):
        yield {"run": run_id, "activity": activity, "activity_run": row.activity_run_id,
               "shard": row.shard_id, "shard_index": index, "path": row.path, "source": row.source,
               "bytes": row.bytes, "checksum": row.checksum, "status": row.status,
               "verified": row.verified, "error": row.error, "node": row.node, "attempt": row.attempt,
               "tries": row.tries, "started_at": row.started_at, "ended_at": row.ended_at}


def report_lines(session: Session, run_id: str, *, status: str | None = None) -> Iterator[str]:
    """:func:`report_rows` as JSON Lines (one ``\\n``-terminated object per file)."""
    for row in report_rows(session, run_id, status=status):
        yield json.dumps(row, separators=(",", ":")) + "\n"


def file_counts(session: Session, activity_run_ids: list[str]) -> dict[str, dict[str, dict[str, int]]]:
    """``{activity run id: {status: {files, bytes}}}`` for the given activity runs."""
    if not activity_run_ids:
        return {}
    query = (select(FileRecord.activity_run_id, FileRecord.status, func.count(), func.sum(FileRecord.bytes))
             .where(FileRecord.activity_run_id.in_(activity_run_ids))
             .group_by(FileRecord.activity_run_id, FileRecord.status))
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for activity_run_id, status, files, size in session.execute(query):
        counts.setdefault(activity_run_id, {})[status] = {"files": int(files), "bytes": int(size or 0)}
    return counts
