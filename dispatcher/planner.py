"""Planning: turn a claimed activity run into shards waiting for placement.

:func:`plan_activity_run` lists the source, cuts the entries into shards
(:func:`dmg.sharding.cut_shards` with ``settings.shard_max_files/bytes``), stores
each shard's spec in the site state, tells the cloud the plan and queues the
shards as pending. Shard ids are ``<activity_run_id>-<index:05d>``.

Idempotent: the plan of an activity run is recorded (``plan:<activity run id>``)
before the cloud hears of it, so replaying the same activity run (after a
Retryable, or by a new dispatcher) re-sends the same plan and queues only shards
that are neither pending nor placed yet. A source that cannot be listed for good
(NotFound, PermissionDenied, a bad store definition) fails the activity run with
a clear message; a Retryable error is raised for the caller to retry.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dispatcher.ports import DispatchCloud
from dmg.connectors import Connector, StoreSpec, connector_for
from dmg.errors import BadInput, DmgError, Retryable
from dmg.sharding import cut_shards
from dmg.sitestate import SiteState
from settings import Settings

log = logging.getLogger(__name__)

#: How long the record of a plan stays in Redis (replays come within minutes).
PLAN_TTL = 7 * 24 * 3600


def shard_id_for(activity_run_id: str, index: int) -> str:
    return f"{activity_run_id}-{index:05d}"


@dataclass
class PlanResult:
    activity_run_id: str
    shards: list[dict[str, Any]] = field(default_factory=list)  # [{id, index, files, bytes}]
    queued: list[str] = field(default_factory=list)  # shard ids pushed to pending now
    error: str = ""  # set when the activity run was failed instead

    @property
    def failed(self) -> bool:
        return bool(self.error)


def plan_activity_run(
    activity_run: dict[str, Any],
    *,
    state: SiteState,
    cloud: DispatchCloud,
    epoch: int,
    settings: Settings,
    connector_factory: Callable[[StoreSpec], Connector] = connector_for,
) -> PlanResult:
    """Plan one claimed activity run (see the module docstring). Raises Retryable."""
    run_id = str(activity_run["id"])
    plan_key = state.key("plan", run_id)
    raw = state.redis.get(plan_key)
    if raw is not None:
        shards = json.loads(raw)
        log.info("replaying the plan activity_run=%s shards=%d", run_id, len(shards))
    else:
        try:
            shards = _cut_and_save(activity_run, state=state, settings=settings,
                                   connector_factory=connector_factory)
        except Retryable:
            raise
        except DmgError as exc:
            error = f"cannot plan activity {activity_run.get('name', run_id)!r}: {exc}"
            log.warning("activity run failed by the planner activity_run=%s error=%s", run_id, exc)
            cloud.fail_activity_run(run_id, epoch=epoch, error=error)
            return PlanResult(run_id, error=error)
        if not state.redis.set(plan_key, json.dumps(shards), nx=True, ex=PLAN_TTL):
            shards = json.loads(state.redis.get(plan_key) or "[]")
    cloud.plan_shards(run_id, epoch=epoch, shards=shards)
    pending = set(state.pending())
    queued = []
    for summary in shards:
        stored = state.shard(summary["id"])
        if stored is not None and stored["attempt"] == 0 and summary["id"] not in pending:
            queued.append(summary["id"])
    state.push_pending(*queued)
    log.info("activity run planned activity_run=%s shards=%d queued=%d", run_id, len(shards), len(queued))
    return PlanResult(run_id, shards=shards, queued=queued)


def _cut_and_save(activity_run: dict[str, Any], *, state: SiteState, settings: Settings,
                  connector_factory: Callable[[StoreSpec], Connector]) -> list[dict[str, Any]]:
    run_id = str(activity_run["id"])
    try:
        source_def, sink_def = activity_run["source"], activity_run["sink"]
        source_spec = StoreSpec.from_json(source_def["store"])
        sink_spec = StoreSpec.from_json(sink_def["store"])
        source_path, sink_path = str(source_def.get("path", "")), str(sink_def.get("path", ""))
    except (KeyError, TypeError) as exc:
        raise BadInput(f"the activity run is missing {exc}",
                       hint="the cloud sent an incomplete activity run; check versions") from exc
    source = connector_factory(source_spec)
    try:
        entries = list(source.list(source_path))
    finally:
        source.close()
    options = dict(activity_run.get("options") or {})
    shards: list[dict[str, Any]] = []
    groups = cut_shards(entries, max_files=settings.shard_max_files, max_bytes=settings.shard_max_bytes)
    for index, group in enumerate(groups):
        shard_id = shard_id_for(run_id, index)
        state.save_shard(shard_id, {
            "shard_id": shard_id,
            "activity_run_id": run_id,
            "index": index,
            "source": {"store": source_spec.to_json(), "path": source_path},
            "sink": {"store": sink_spec.to_json(), "path": sink_path},
            "entries": [e.to_json() for e in group],
            "options": options,
        })
        shards.append({"id": shard_id, "index": index, "files": len(group),
                       "bytes": sum(e.size for e in group)})
    return shards
