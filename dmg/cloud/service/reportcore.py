"""A report batch applied in SQLAlchemy Core: plain rows, a fixed handful of statements.

:func:`apply_core` applies the batches :mod:`.batchsets` applies as a set (every plan and
placement taken; see there), without building an ORM object for a shard, an attempt or
a file result:

- its shards and their activity runs' gateway, run and cancel are read in one SELECT
  (PostgreSQL: the shards locked ``FOR NO KEY UPDATE``, in id order, the lock order of
  :mod:`.counters`), the batch's plans applied (:func:`.batchsets.apply_plans`), then the
  shards they planned read the same way, and every attempt of these shards in one SELECT;
- each item is decided in Python on those rows by the very rules of the single routes
  (:func:`.dispatch.report_shard`'s checks and :func:`.dispatch.apply_to_shard`,
  :func:`.attempts.check_worker` and :func:`.attempts.apply_report`,
  :func:`.files.file_rows`): the token's node, the attempt placed on it, the
  dispatcher's epoch; a stale attempt's report is refused and changes nothing;
- the rows it changed are written at the end: one executemany UPDATE of the shards, one
  executemany INSERT of new attempts and one UPDATE of the changed ones, one executemany
  upsert of the file results, and the counters' statements once per activity run and
  run for the whole batch (``n = n + :d``, :func:`.counters.settle`).

A worker's item refused or told to wait is answered as item by item (its checks come
before it changes a row); a placement refused, an item relayed for a removed node, a
plan that must wait and the like raise :class:`.batchsets.Irregular`: the caller rolls
back and applies the batch item by item (:func:`.batches.apply_batch`). Items are
idempotent, so a batch sent again after a lost answer changes nothing and counts
nothing twice.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from dmg.cloud.models import ActivityRun, Shard, ShardAttempt
from dmg.cloud.schemas import FileResults, ReportItem, ShardReport
from dmg.cloud.service import attempts, batchsets, counters, dispatch, files
from dmg.cloud.service.gateways import NodeIdentity
from dmg.errors import DmgError, NotFound, Retryable, StaleAttempt
from dmg.shards.status import CLOUD_FINISHED, CLOUD_PLACED

_SHARDS = cast(Table, Shard.__table__)
_ACTIVITY_RUNS = cast(Table, ActivityRun.__table__)
_ATTEMPTS = cast(Table, ShardAttempt.__table__)

#: The shard columns a report may change (written back for every changed shard).
SHARD_WRITTEN = ("status", "node", "attempt", "files", "bytes", "files_total", "bytes_total", "started_at",
                 "ended_at", "wait_reason", "error")
#: The attempt columns a report may change.
ATTEMPT_WRITTEN = ("node", "status", "outcome", "error", "wait_reason", "files", "bytes", "placed_at",
                   "started_at", "ended_at")


class Row:
    """A shard or attempt row as plain attributes (what the shared rules read and set)."""

    def __init__(self, **columns: Any) -> None:
        self.__dict__.update(columns)

    def __getattr__(self, name: str) -> Any:  # for mypy: every column is an attribute
        raise AttributeError(name)


def apply_core(session: Session, node: NodeIdentity, items: list[ReportItem], *, now: float,
               ttl: float) -> dict[str, Any]:
    """-> the answer :func:`.batches.apply_batch` gives this batch; :class:`.batchsets.Irregular`
    (roll the transaction back, go item by item) when this module does not apply it."""
    plans = [item.plan for item in items if item.plan is not None]
    batchsets.check_regular(items, plans)
    report_ids = sorted({item.shard_id for item in items if item.plan is None})
    shards = _read_shards(session, report_ids)  # shards first: the lock order
    checked: set[Any] = set()  # the dispatcher's epoch and nodes, checked once a batch
    if plans:
        batchsets.apply_plans(session, node, plans, checked, now=now, ttl=ttl)
        new = [shard_id for shard_id in report_ids if shard_id not in shards]
        if new:  # shards this batch planned (its own rows), or unknown (refused below)
            shards.update(_read_shards(session, new))
    batch = _Batch(session, node, shards, _read_attempts(session, list(shards)), checked, now=now, ttl=ttl)
    results: list[dict[str, Any]] = []
    retry: dict[str, Any] | None = None
    waiting: dict[str, dict[str, Any]] = {}  # shard id -> the retry error its earlier item got
    for item in items:
        if item.plan is not None:
            results.append({"shard_id": "", "activity_run_id": item.plan.activity_run_id, "ok": True})
            continue
        if item.shard_id in waiting:  # an earlier report of this shard waits: so does this one
            results.append({"shard_id": item.shard_id, "ok": False, "retry": True, **waiting[item.shard_id]})
            continue
        kept = len(batch.file_rows)
        out: dict[str, Any] = {}
        try:
            if item.files is not None:
                out.update(batch.files(item.shard_id, item.files))
            if item.report is not None:
                out.update(batch.report(item.shard_id, item.report))
        except DmgError as exc:
            if item.report is not None and item.report.status == CLOUD_PLACED:
                raise batchsets.Irregular(f"placement of shard {item.shard_id!r}: {exc}") from exc
            # A worker's item is refused by checks made before it changes a row: only its
            # file rows are to drop.
            del batch.file_rows[kept:]
            error = exc.to_json()
            if isinstance(exc, Retryable):
                waiting[item.shard_id] = error
                retry = retry or error
                results.append({"shard_id": item.shard_id, "ok": False, "retry": True, **error})
            else:
                results.append({"shard_id": item.shard_id, "ok": False, **error})
            continue
        results.append({"shard_id": item.shard_id, "ok": True, **out})
    batch.write()
    return {"applied": len(results), "results": results, "retry": retry}


class _Batch:
    """The rows a batch reads, changes and writes back (see the module docstring)."""

    def __init__(self, session: Session, node: NodeIdentity, shards: dict[str, Row],
                 known: dict[str, dict[int, Row]], checked: set[Any], *, now: float, ttl: float) -> None:
        self.session, self.node, self.shards, self.known, self.checked = session, node, shards, known, checked
        self.now, self.ttl = now, ttl
        self.changed_shards: dict[str, Row] = {}
        self.new_attempts: list[Row] = []
        self.changed_attempts: dict[int, Row] = {}
        self.file_rows: list[files.FileRow] = []

    def _shard(self, shard_id: str) -> Row:
        shard = self.shards.get(shard_id)
        if shard is None:
            raise dispatch.missing_shard(self.session, self.node, shard_id)
        if shard.gateway_id != self.node.gateway_id:
            # Another gateway's shard gets the very answer of one that does not exist.
            raise NotFound(f"shard {shard_id!r} does not exist in gateway {self.node.gateway!r}",
                           hint="the dispatcher plans shards before it places them")
        return shard

    def files(self, shard_id: str, body: FileResults) -> dict[str, Any]:
        """:func:`.files.record_file_results`, its rows kept for :meth:`write`."""
        shard = self._shard(shard_id)
        if body.attempt < shard.attempt:
            raise StaleAttempt(f"shard {shard_id!r} attempt {body.attempt} was replaced by attempt "
                               f"{shard.attempt}", hint="its file results no longer count")
        attempts.check_worker(shard_id, body.attempt, self.node, self.known[shard_id].get(body.attempt),
                              named=body.node)
        rows = files.file_rows(shard.activity_run_id, shard_id, body, self.node, now=self.now)
        self.file_rows.extend(rows)
        return {"recorded": len(rows)}

    def report(self, shard_id: str, report: ShardReport) -> dict[str, Any]:
        """:func:`.dispatch.report_shard` on the batch's rows: every check before any change."""
        shard = self._shard(shard_id)
        if report.attempt < shard.attempt:
            raise StaleAttempt(f"shard {shard_id!r} attempt {report.attempt} was replaced by attempt "
                               f"{shard.attempt}", hint="this attempt must not commit its output")
        placed = report.status == CLOUD_PLACED
        if placed:
            dispatch.check_placement(self.session, self.node, report, now=self.now, ttl=self.ttl,
                                     checked=self.checked)
        known = self.known[shard_id]
        row = known.get(report.attempt)
        if not placed:
            attempts.check_worker(shard_id, report.attempt, self.node, row, named=report.node)
        older = [other for attempt, other in known.items() if attempt < report.attempt]
        if row is None:
            row = Row(id=None, **attempts.new_row(shard.activity_run_id, shard_id, report))
            known[report.attempt] = row
            self.new_attempts.append(row)
        elif row.id is not None:
            self.changed_attempts[row.id] = row
        for other in older:
            if other.id is not None:
                self.changed_attempts[other.id] = other  # may be closed: written back all the same
        attempts.apply_report(row, older, report, self.node, cancelled=shard.cancelled_at is not None,
                              now=self.now)
        reporter = (report.node or self.node.node) if placed else self.node.node
        previous = shard.status
        before = counters.ShardFigures(shard.status, int(shard.files or 0), int(shard.bytes or 0))
        if not dispatch.apply_to_shard(shard, report, reporter, now=self.now):
            return {"status": shard.status, "attempt": shard.attempt}
        self.changed_shards[shard_id] = shard
        after = counters.ShardFigures(shard.status, int(shard.files or 0), int(shard.bytes or 0))
        counters.shard_moved(self.session, shard.activity_run_id, shard.run_id, shard.index, before, after,
                             now=self.now)
        if previous in CLOUD_FINISHED and shard.status not in CLOUD_FINISHED:  # an ended shard starts again
            counters.derive_later_id(self.session, shard.activity_run_id, shard.run_id, now=self.now)
        return {"status": shard.status, "attempt": shard.attempt}

    def write(self) -> None:
        """Write the changed rows back, a statement per kind of change."""
        session = self.session
        if self.changed_shards:
            session.execute(_SHARD_UPDATE, [_written(shard, SHARD_WRITTEN, shard_id)
                                            for shard_id, shard in self.changed_shards.items()])
        if self.new_attempts:
            session.execute(insert(_ATTEMPTS), [{c: getattr(row, c) for c in attempts.COLUMNS}
                                                for row in self.new_attempts])
        if self.changed_attempts:
            session.execute(_ATTEMPT_UPDATE, [_written(row, ATTEMPT_WRITTEN, row_id)
                                              for row_id, row in self.changed_attempts.items()])
        files.upsert(session, self.file_rows)


def _written(row: Row, columns: tuple[str, ...], key: Any) -> dict[str, Any]:
    return {"b_id": key, **{column: getattr(row, column) for column in columns}}


_SHARD_UPDATE = update(_SHARDS).where(_SHARDS.c.id == bindparam("b_id")).values(
    {c: bindparam(c, type_=_SHARDS.c[c].type) for c in SHARD_WRITTEN})
_ATTEMPT_UPDATE = update(_ATTEMPTS).where(_ATTEMPTS.c.id == bindparam("b_id")).values(
    {c: bindparam(c, type_=_ATTEMPTS.c[c].type) for c in ATTEMPT_WRITTEN})
_SHARD_READ = (*_SHARDS.c, _ACTIVITY_RUNS.c.gateway_id, _ACTIVITY_RUNS.c.run_id,
               _ACTIVITY_RUNS.c.cancelled_at)


def _read_shards(session: Session, shard_ids: list[str]) -> dict[str, Row]:
    """These shards with their activity run's gateway, run and cancel, in one statement
    (PostgreSQL: the shards locked ``FOR NO KEY UPDATE``, in id order, as
    :func:`.counters.lock_shards` locks them) -> {id: row}."""
    if not shard_ids:
        return {}
    locked = session.get_bind().dialect.name == "postgresql"
    rows = session.execute(_SHARD_SELECT[locked], {"ids": sorted(shard_ids)})
    return {row.id: Row(**row._asdict()) for row in rows}


def _read_attempts(session: Session, shard_ids: list[str]) -> dict[str, dict[int, Row]]:
    """Every attempt of these shards, in one statement -> {shard id: {attempt: row}}."""
    known: dict[str, dict[int, Row]] = {shard_id: {} for shard_id in shard_ids}
    if shard_ids:
        for row in session.execute(_ATTEMPT_SELECT, {"ids": shard_ids}):
            known[row.shard_id][row.attempt] = Row(**row._asdict())
    return known


# Built once (SQLAlchemy caches their compiled form; building one costs as much as running it).
_SHARD_SELECT_ANY = (select(*_SHARD_READ)
                     .join(_ACTIVITY_RUNS, _ACTIVITY_RUNS.c.id == _SHARDS.c.activity_run_id)
                     .where(_SHARDS.c.id.in_(bindparam("ids", expanding=True))).order_by(_SHARDS.c.id))
_SHARD_SELECT = {False: _SHARD_SELECT_ANY,
                 True: _SHARD_SELECT_ANY.with_for_update(of=_SHARDS, key_share=True)}
_ATTEMPT_SELECT = select(_ATTEMPTS).where(_ATTEMPTS.c.shard_id.in_(bindparam("ids", expanding=True)))
