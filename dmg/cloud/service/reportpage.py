"""One page of an activity run's per-file report, and its checksum tally by shard (portal)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dmg.cloud.models import ActivityRun, FileRecord, Shard
from dmg.errors import NotFound

#: Rows of a page of the per-file report.
PAGE_SIZE = 100


def activity_report(session: Session, run_id: str, activity_run_id: str, *, page: int,
                    page_size: int = PAGE_SIZE) -> dict[str, Any]:
    """``{total, page, pages, files: [...], verified: {shard id: n}}`` for page ``page``
    (from 1) of the activity run's file results, by shard index and path. NotFound when
    the activity run is not the run's."""
    activity = session.get(ActivityRun, activity_run_id)
    if activity is None or activity.run_id != run_id:
        raise NotFound(f"activity run {activity_run_id!r} is not part of run {run_id!r}",
                       hint="open the run's page and follow its links")
    total = int(session.scalar(select(func.count()).select_from(FileRecord)
                               .where(FileRecord.activity_run_id == activity_run_id)) or 0)
    pages = max(1, -(-total // page_size))
    page = max(1, min(page, pages))
    query = (select(FileRecord, Shard.index).join(Shard, FileRecord.shard_id == Shard.id)
             .where(FileRecord.activity_run_id == activity_run_id)
             .order_by(Shard.index, FileRecord.path).offset((page - 1) * page_size).limit(page_size))
    files = [{"shard": row.shard_id, "shard_index": index, "path": row.path, "bytes": row.bytes,
              "checksum": row.checksum, "status": row.status, "verified": row.verified,
              "error": row.error, "node": row.node, "attempt": row.attempt, "tries": row.tries}
             for row, index in session.execute(query)]
    verified = dict(session.execute(
        select(FileRecord.shard_id, func.count()).where(FileRecord.activity_run_id == activity_run_id,
                                                        FileRecord.verified != "")
        .group_by(FileRecord.shard_id)).all())
    return {"total": total, "page": page, "pages": pages, "page_size": page_size, "files": files,
            "verified": {str(k): int(v) for k, v in verified.items()}}
