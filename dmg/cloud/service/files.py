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
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dmg.cloud.models import ActivityRun, FileRecord, Run, Shard
from dmg.cloud.schemas import FileResults
from dmg.cloud.service import attempts, dispatch
from dmg.cloud.service.gateways import NodeIdentity
from dmg.errors import NotFound, Retryable, StaleAttempt


def path_hash(path: str) -> str:
    return hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()


def record_file_results(session: Session, node: NodeIdentity, shard_id: str, body: FileResults, *,
                        now: float) -> dict[str, Any]:
    """Store a batch of a shard's file results; -> ``{recorded: n}``.

    NotFound for a shard of another gateway; StaleAttempt when a newer attempt of
    the shard was reported. Retryable when another request wrote the same file at
    the same moment (send again).
    """
    shard = session.get(Shard, shard_id)
    if shard is None or shard.activity_run.gateway_id != node.gateway_id:
        # Another gateway's shard gets the very answer of one that does not exist.
        raise dispatch.missing_shard(session, node, shard_id)
    if body.attempt < shard.attempt:
        raise StaleAttempt(f"shard {shard_id!r} attempt {body.attempt} was replaced by attempt "
                           f"{shard.attempt}", hint="its file results no longer count")
    attempts.check_worker(shard, body.attempt, node, attempts.attempt_row(session, shard, body.attempt),
                          named=body.node)
    latest = {path_hash(f.path): f for f in body.files}  # a path sent twice: the last one counts
    existing = {row.path_hash: row for row in session.scalars(
        select(FileRecord).where(FileRecord.shard_id == shard_id, FileRecord.path_hash.in_(list(latest))))}
    reporter = node.node  # from the token, never from the body
    new_rows: list[dict[str, Any]] = []
    for digest, item in latest.items():
        values = {"path": item.path, "source": item.source, "bytes": item.bytes, "checksum": item.checksum,
                  "status": item.status, "verified": item.verified, "error": item.error,
                  "tries": item.tries, "node": reporter, "attempt": body.attempt, "recorded_at": now,
                  "started_at": item.started, "ended_at": item.ended}
        row = existing.get(digest)
        if row is None:
            new_rows.append({"activity_run_id": shard.activity_run_id, "shard_id": shard_id,
                             "path_hash": digest, **values})
        elif row.attempt <= body.attempt:  # a re-post, or a newer attempt: it replaces the row
            for name, value in values.items():
                setattr(row, name, value)
    try:
        if new_rows:  # first delivery (the common case): one INSERT executed for the batch
            # executemany: one compiled statement (cached), not a VALUES clause of
            # 13 parameters per file compiled anew for every batch
            session.execute(insert(FileRecord), new_rows)
        session.flush()
    except IntegrityError:
        raise Retryable(f"file results of shard {shard_id!r} were written concurrently",
                        hint="send them again") from None
    return {"recorded": len(latest)}


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
