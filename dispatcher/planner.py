"""Planning: turn a claimed activity run into shards waiting for placement.

:func:`plan_activity_run` lists the source, cuts the entries into shards
(:func:`dmg.sharding.cut_for_slots`: sized by the files, the bytes and the gateway's
free slots, under ``settings.shard_max_files/bytes``), stores
each shard's spec (:class:`dmg.shards.ShardSpec`, its ``to_json()``) in the site
state, records the plan for the cloud in the site's ordered report list
(:mod:`dispatcher.reports`: the lease holder sends it in a batch, before its shards'
placements) and queues the shards as pending. No cloud request is made on the way:
placement starts as soon as the shards are pending. Shard ids are
``<activity_run_id>-<index:05d>``.

A fresh plan costs one script (:func:`dmg.site.plans.record_plan`: the plan unless one is
recorded already, every shard's hash, the plan's report entry, the pending shards and the
placement loop's wake-up, in one atomic step), plus one read (is a plan recorded already?)
before it only when an object will be split or the source cannot be listed, plus
the free-slot count when there is more than one entry to cut, read at most once per
:data:`dispatcher.slots.MAX_AGE` by every planner thread together
(:class:`dispatcher.slots.FreeSlots`).

Idempotent: the plan of an activity run is recorded (``plan:<activity run id>``)
before the cloud hears of it, so replaying the same activity run (after a
Retryable, or by a new dispatcher) records the same plan again (the cloud takes a
duplicate as a no-op) and queues only shards that are neither pending nor placed
yet. A replay lists the source again (the listing is dropped when the script finds the
recorded plan: the plan stays the one recorded first); one whose source cannot be listed
any more replays the recorded plan, and a split object's sink write is never begun twice
(the record is read before splitting). A source that cannot be listed for good
(NotFound, PermissionDenied, a bad store definition), or that fails in any unexpected
way, fails that activity run alone with a clear message (the cloud marks it Failed and never hands it out
again); a Retryable or broker error is raised for the caller to retry.

The activity's options are checked here (:class:`dmg.transfer.CopyOptions`): a
bad one fails the activity run before anything moves. Two copy decisions are
made at planning, where one listing serves every shard:

- **include/exclude filters** drop entries before they are cut into shards
  (a filtered file is in no shard and not in the per-file report);
- for **incremental copy**, the sink is listed once (unless ``overwrite`` is
  ``always``) and each entry carries the sink's entry under ``"sink"`` (``null``:
  absent). The worker decides copy or skip from it — it hashes the source when
  only checksums can tell — and reports skipped files in the per-file report.
  Entries without a hint (the sink could not be listed) are looked up by the
  worker with ``stat``.

One very large object (option ``split_above``) is not one shard but one *part
shard* per range, so that several nodes write it at once and the sink commits it
once (S3 multipart upload, Azure block list, a shared staging file): see
:mod:`dispatcher.splitting` (the sink's write begins here, once per object) and
:mod:`workers.run.part` (parts and the single commit).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dispatcher.fresh import FreshShards
from dispatcher.ports import DispatchCloud
from dispatcher.reports import PlacementOutbox
from dispatcher.slots import FreeSlots
from dispatcher.splitting import split_large_entries
from dmg import ids
from dmg.connectors import Connector, Entry, StoreSpec, connector_for
from dmg.errors import BadInput, BrokerError, DmgError, NotFound, Retryable
from dmg.sharding import cut_for_slots
from dmg.shards import PartSpec, ShardSpec, ShardStores
from dmg.site.plans import ALREADY_PLANNED, CANCELLED, QUEUED, record_plan
from dmg.site.state import SiteState
from dmg.transfer import CopyOptions, PathFilter, relative_path, sink_path_for
from dmg.transfer.options import ALWAYS
from dmg.transfer.split import SplitOptions
from settings import Settings

log = logging.getLogger(__name__)

#: How long the record of a plan stays in Redis (replays come within minutes).
PLAN_TTL = 7 * 24 * 3600


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
    outbox: PlacementOutbox | None = None,
    slots: FreeSlots | None = None,
    fresh: FreshShards | None = None,
) -> PlanResult:
    """Plan one claimed activity run (see the module docstring). Raises Retryable,
    BrokerError. ``outbox``: where the plan is recorded for the cloud (the site's
    report list by default); ``slots``: the free-slot count shared by the planners (read
    for this plan alone by default); ``fresh``: told the shards of a fresh plan, so that
    placement need not read them back (:mod:`dispatcher.fresh`)."""
    run_id = str(activity_run["id"])
    outbox = outbox or PlacementOutbox(state)
    slots = slots or FreeSlots(state, max_age=0.0)
    raw: str | bytes | None = None
    if activity_run.get("again"):
        # Sent again after a claim's lost answer: this dispatcher may have planned it and its
        # plan not reached the cloud yet; a recorded plan is replayed without a listing.
        raw = state.redis.get(state.keys.plan(run_id))
        if raw is not None:
            return _replay(run_id, json.loads(raw), state=state, outbox=outbox)
    try:
        listing = _list(activity_run, connector_factory=connector_factory)
    except (Retryable, BrokerError):
        raise
    except Exception as exc:
        # A plan recorded before is replayed whatever the source says now (its shards may run).
        raw = state.redis.get(state.keys.plan(run_id))
        if raw is None:
            return _failed(activity_run, exc, cloud=cloud, epoch=epoch)
    if raw is None and listing.splits:
        # Splitting begins the sink's write of each large object: never for a plan recorded
        # already. Without a split, a recorded plan is found by record_plan itself (SET NX):
        # no round trip before it.
        raw = state.redis.get(state.keys.plan(run_id))
    if raw is None:
        try:
            shards, specs, small = _cut(activity_run, listing, state=state, settings=settings, slots=slots,
                                 connector_factory=connector_factory)
        except (Retryable, BrokerError):
            raise
        except Exception as exc:
            return _failed(activity_run, exc, cloud=cloud, epoch=epoch)
        # Known before the script queues them (placement may take them at once); forgotten
        # unless they were queued by it.
        shard_ids = [shard_id for shard_id, _spec in specs]
        if fresh is not None:
            fresh.add(shard_ids, ShardStores(listing.source_spec, listing.sink_spec),
                      small=small)
        recorded = ALREADY_PLANNED
        try:
            # The plan reaches the cloud through the lease holder's ordered report list, ahead of
            # its shards' placements (dispatcher.reports): no cloud round trip before placement.
            recorded = record_plan(state, run_id, plan_json=json.dumps(shards), ttl=PLAN_TTL,
                                   report_entry=outbox.plan_entry(run_id, shards, queued_at=time.time()),
                                   shards=specs)
        finally:
            if fresh is not None and recorded != QUEUED:
                fresh.forget(*shard_ids)
        if recorded != ALREADY_PLANNED:
            # The sender is not woken for the plan alone: the placement round that places its
            # shards wakes it, and the plan and its placements go to the cloud in one batch.
            queued = [] if recorded == CANCELLED else [summary["id"] for summary in shards]
            slots.used(len(queued))
            if recorded == CANCELLED:
                log.info("activity run cancelled before its shards were queued activity_run=%s", run_id)
            # DEBUG: one line per activity run costs the lease holder's process ~5 % of its CPU
            # at load; the cloud records every plan, and each shard's placement is logged.
            log.debug("activity run planned activity_run=%s shards=%d queued=%d", run_id, len(shards),
                      len(queued))
            return PlanResult(run_id, shards=shards, queued=queued)
        raw = state.redis.get(state.keys.plan(run_id)) or "[]"  # another planner won the race
    return _replay(run_id, json.loads(raw), state=state, outbox=outbox)


def _replay(run_id: str, shards: list[dict[str, Any]], *, state: SiteState,
            outbox: PlacementOutbox) -> PlanResult:
    """Record a plan recorded before again (the cloud takes a duplicate as a no-op) and
    queue its shards that are neither pending nor placed."""
    log.info("replaying the plan activity_run=%s shards=%d", run_id, len(shards))
    state.begin_planning(run_id)  # a new dispatcher replays it if this one dies before the push
    outbox.plan(run_id, shards, queued_at=time.time())
    queued = _not_queued_yet(state, shards)
    if state.is_cancelled(run_id):  # cancelled while it was being planned
        log.info("activity run cancelled before its shards were queued activity_run=%s", run_id)
        queued = []
    state.push_pending(*queued)
    state.end_planning(run_id)
    log.info("activity run planned activity_run=%s shards=%d queued=%d", run_id, len(shards), len(queued))
    return PlanResult(run_id, shards=shards, queued=queued)


def _not_queued_yet(state: SiteState, shards: list[dict[str, Any]]) -> list[str]:
    """The shards of a replayed plan that are neither pending nor placed."""
    pending = set(state.pending())
    queued = []
    for summary in shards:
        stored = state.shard(summary["id"])
        if stored is not None and stored["attempt"] == 0 and summary["id"] not in pending:
            queued.append(summary["id"])
    return queued


def _failed(activity_run: dict[str, Any], exc: Exception, *, cloud: DispatchCloud, epoch: int) -> PlanResult:
    """Fail the activity run for ``exc`` (a DmgError: its message; anything else: a bug or a
    hostile definition, logged): this run fails, the others go on."""
    if isinstance(exc, DmgError):
        return _fail(activity_run, cloud=cloud, epoch=epoch, reason=str(exc))
    log.error("unexpected planning error activity_run=%s", activity_run.get("id"), exc_info=exc)
    return _fail(activity_run, cloud=cloud, epoch=epoch,
                 reason=f"unexpected {type(exc).__name__}: {str(exc)[:300]}")


def _fail(activity_run: dict[str, Any], *, cloud: DispatchCloud, epoch: int, reason: str) -> PlanResult:
    """Tell the cloud the activity run cannot be planned (it becomes Failed with ``reason``)."""
    run_id = str(activity_run["id"])
    error = f"cannot plan activity {activity_run.get('name', run_id)!r}: {reason}"
    log.warning("activity run failed by the planner activity_run=%s error=%s", run_id, reason)
    cloud.fail_activity_run(run_id, epoch=epoch, error=error[:4000])
    return PlanResult(run_id, error=error)


@dataclass
class _Listing:
    """An activity run's definition read and its source listed (and filtered)."""

    source_spec: StoreSpec
    sink_spec: StoreSpec
    source_path: str
    sink_path: str
    options: dict[str, Any]
    copy_options: CopyOptions
    entries: list[Entry]
    splits: bool  # some entry is large enough to be split in parts
    source: Connector  # closed; asked for its capabilities (ranged reads) only


def _list(activity_run: dict[str, Any], *,
          connector_factory: Callable[[StoreSpec], Connector]) -> _Listing:
    """Read the definition and list the source; nothing is written anywhere. Raises
    BadInput (an incomplete activity run), what the connector raises."""
    try:
        source_def, sink_def = activity_run["source"], activity_run["sink"]
        source_spec = StoreSpec.from_json(source_def["store"])
        sink_spec = StoreSpec.from_json(sink_def["store"])
        source_path, sink_path = str(source_def.get("path", "")), str(sink_def.get("path", ""))
    except (KeyError, TypeError) as exc:
        raise BadInput(f"the activity run is missing {exc}",
                       hint="the cloud sent an incomplete activity run; check versions") from exc
    options = dict(activity_run.get("options") or {})
    copy_options = CopyOptions.from_json(options)
    keep = PathFilter(copy_options.include, copy_options.exclude)
    source = connector_factory(source_spec)
    try:
        if keep.active:
            entries = [e for e in source.list(source_path)
                       if keep(relative_path(e.path, source_prefix=source_path))]
        else:  # no filter: no per-entry call (a tenth of a 10,000-file listing)
            entries = list(source.list(source_path))
    finally:
        source.close()
    split = SplitOptions.from_json(options)
    # Whether an entry splits grows with its size: the largest entry tells.
    splits = bool(entries) and split.splits(max(e.size for e in entries))
    return _Listing(source_spec, sink_spec, source_path, sink_path, options, copy_options, entries,
                    splits=splits, source=source)


def _cut(activity_run: dict[str, Any], listing: _Listing, *, state: SiteState, settings: Settings,
         slots: FreeSlots, connector_factory: Callable[[StoreSpec], Connector]
         ) -> tuple[list[dict[str, Any]], list[tuple[str, str]], set[str]]:
    """``(shard summaries, [(shard id, spec JSON)], the ids of its small shards)`` of a listed
    activity run (:attr:`dmg.shards.ShardSpec.small`): split and cut;
    nothing of it is recorded yet (the sink's write of a split object is begun, once per
    object: :mod:`dispatcher.splitting`)."""
    run_id = str(activity_run["id"])
    source_spec, sink_spec = listing.source_spec, listing.sink_spec
    source_path, sink_path = listing.source_path, listing.sink_path
    options, copy_options, entries = listing.options, listing.copy_options, listing.entries
    source = listing.source
    sink_entries = None
    if copy_options.overwrite != ALWAYS and entries:
        sink_entries = _list_sink(sink_spec, sink_path, connector_factory=connector_factory)

    def sink_hints(group: list[Entry]) -> dict[str, Entry | None]:
        """The sink's entry of each source entry (None: absent); none when the sink was not listed."""
        if sink_entries is None:
            return {}
        if not sink_entries:  # an empty sink: every entry is absent there, no path to map
            return dict.fromkeys((e.path for e in group), None)
        return {e.path: sink_entries.get(sink_path_for(e.path, source_prefix=source_path,
                                                       sink_prefix=sink_path)) for e in group}

    def spec_of(index: int, group: list[Entry], *, hints: dict[str, Entry | None],
                part: PartSpec | None = None) -> ShardSpec:
        return ShardSpec(shard_id=ids.shard_id(run_id, index), activity_run_id=run_id, index=index,
                         source_store=source_spec, source_path=source_path, sink_store=sink_spec,
                         sink_path=sink_path, entries=tuple(group), options=options, sink_hints=hints,
                         part=part)

    entries, parts = split_large_entries(
        entries, activity_run_id=run_id, source=source, source_path=source_path, sink_spec=sink_spec,
        sink_path=sink_path, options=options, overwrite=copy_options.overwrite, sink_entries=sink_entries,
        state=state, connector_factory=connector_factory)
    shards: list[dict[str, Any]] = []
    specs: list[tuple[str, str]] = []
    small: set[str] = set()
    # One entry makes one shard whatever the free slots: no need to read them.
    groups = cut_for_slots(entries, slots=slots.free() if len(entries) > 1 else 1,
                           max_files=settings.shard_max_files, max_bytes=settings.shard_max_bytes)
    for index, group in enumerate(groups):
        spec = spec_of(index, group, hints=sink_hints(group))
        specs.append((spec.shard_id, json.dumps(spec.to_json())))
        if spec.small:
            small.add(spec.shard_id)
        shards.append({"id": spec.shard_id, "index": index, "files": spec.files_total,
                       "bytes": spec.bytes_total})  # -1 (size unknown: SQL) counts 0
    for index, part in enumerate(parts, start=len(groups)):
        spec = spec_of(index, [part.entry], hints={}, part=part)
        specs.append((spec.shard_id, json.dumps(spec.to_json())))
        # The object counts once, as a file of its last part (whichever part commits reports it).
        last = part.part_number == part.parts_total
        shards.append({"id": spec.shard_id, "index": index, "files": int(last), "bytes": part.length})
    return shards, specs, small


def _list_sink(spec: StoreSpec, path: str, *,
               connector_factory: Callable[[StoreSpec], Connector]) -> dict[str, Entry] | None:
    """The sink's entries under ``path`` by path; ``{}`` when it is empty or missing, None
    when it cannot be listed now (the workers then look each file up themselves)."""
    try:
        sink = connector_factory(spec)
    except DmgError as exc:
        log.warning("sink not listed for incremental copy store=%s error=%s", spec.name, exc)
        return None
    try:
        return {e.path: e for e in sink.list(path)}
    except NotFound:
        return {}
    except DmgError as exc:
        log.warning("sink not listed for incremental copy store=%s error=%s", spec.name, exc)
        return None
    finally:
        sink.close()
