"""Routes of the per-file report: nodes post file results, users download a run's report."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from dmg.cloud.api.auth import Node, Service, require_user
from dmg.cloud.schemas import FileResults

#: Media type of the report: one JSON object per line.
JSON_LINES = "application/x-ndjson"

nodes = APIRouter()
users = APIRouter(dependencies=[Depends(require_user)])


@nodes.post("/shards/{shard_id}/files", tags=["dispatch"])
def report_files(shard_id: str, body: FileResults, node: Node, svc: Service) -> dict[str, Any]:
    """Record a batch of a shard attempt's file results (idempotent per path);
    409 stale_attempt if a newer attempt of the shard exists."""
    return svc.record_file_results(node, shard_id, body)


@users.get("/runs/{run_id}/report", tags=["runs"], response_class=StreamingResponse)
async def run_report(run_id: str, svc: Service,
                     status: Literal["copied", "skipped", "failed"] | None = Query(default=None)
                     ) -> StreamingResponse:
    """The run's per-file report as JSON Lines: ``{run, activity, activity_run, shard,
    shard_index, path, source, bytes, checksum, status, verified, error, node, attempt,
    tries, started_at, ended_at}`` per file; ``status`` keeps only files with that status."""
    lines = await run_in_threadpool(svc.run_report, run_id, status=status)
    return StreamingResponse(lines, media_type=JSON_LINES,
                             headers={"Content-Disposition": f'attachment; filename="run-{run_id}.jsonl"'})
