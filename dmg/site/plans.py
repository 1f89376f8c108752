"""Recording a fresh plan in the site state: one script, one round trip.

:func:`record_plan` does, atomically (:data:`dmg.site.scripts.RECORD_PLAN`), what the
planner used to do in a dozen round trips: record the plan (``plan:<activity run id>``,
only if none is recorded yet), create each shard's hash (``attempt`` 0, its ``spec``,
state queued; an existing hash keeps its attempt), append the plan's entry to the
``placements`` list (:mod:`dispatcher.reports`: the cloud hears of the plan before any
placement), and, unless the run was cancelled, push the shards to ``pending`` and wake
the dispatcher's placement loop. Being one step, it needs no ``planning`` marker: a
dispatcher that dies before it recorded nothing, one that dies after left nothing to
replay. When a plan was recorded already (a replay, or another planner won), nothing is
written and the caller takes the replay path.
"""

from __future__ import annotations

from collections.abc import Sequence

from dmg.shards.status import STATE_QUEUED
from dmg.site import scripts
from dmg.site.state import SiteState

#: :func:`record_plan`'s answers.
ALREADY_PLANNED = "already planned"
QUEUED = "queued"
CANCELLED = "cancelled"
_ANSWERS = {0: ALREADY_PLANNED, 1: QUEUED, 2: CANCELLED}


def record_plan(state: SiteState, activity_run_id: str, *, plan_json: str, ttl: int,
                report_entry: str, shards: Sequence[tuple[str, str]]) -> str:
    """Record a fresh plan (see the module docstring); ``shards``: ``(shard id, spec JSON)``
    in order; ``report_entry``: the plan's entry of the placements list. Returns
    :data:`QUEUED`, :data:`CANCELLED` (recorded, shards not queued) or
    :data:`ALREADY_PLANNED` (nothing written). Raises BrokerError."""
    keys = state.keys
    script = state.redis.register_script(scripts.RECORD_PLAN)
    args: list[str | int] = [plan_json, int(ttl), report_entry, STATE_QUEUED]
    for shard_id, spec in shards:
        args += [shard_id, spec]
    answer = script(keys=[keys.plan(activity_run_id), keys.placements, keys.cancelled(activity_run_id),
                          keys.pending, keys.wake, *(keys.shard(shard_id) for shard_id, _ in shards)],
                    args=args)
    return _ANSWERS[int(answer)]
