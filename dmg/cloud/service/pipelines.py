"""Pipelines and their runs: a run queues one activity run per activity."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, bindparam, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from dmg.cloud.models import QUEUED, ActivityRun, Gateway, Node, Pipeline, Run, Shard
from dmg.cloud.schemas import PipelineCreate
from dmg.cloud.service import counters, localpaths
from dmg.cloud.service.gateways import get_gateway
from dmg.cloud.service.stores import store_rows, stores_by_name
from dmg.cloud.service.views import activity_run_json, pipeline_json, run_json
from dmg.definitions import check_activity_options, check_path, check_size, stored_definition_problem
from dmg.errors import BadInput, Conflict, NotFound


def create_pipeline(session: Session, pipeline: PipelineCreate, *, now: float) -> dict[str, Any]:
    """BadInput for duplicate activity names, a bad option or path (:mod:`dmg.definitions`),
    NotFound for an unknown gateway or store, Conflict for a taken name. ``warnings`` in
    the answer: see :mod:`.localpaths`."""
    names = [a.name for a in pipeline.activities]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BadInput(f"pipeline: activity name {duplicates[0]!r} is used twice",
                       hint="give every activity of a pipeline its own name")
    check_size(pipeline.model_dump(), what=f"pipeline {pipeline.name!r}")
    for activity in pipeline.activities:
        check_path(activity.source.path, where=f"activity {activity.name!r} source")
        check_path(activity.sink.path, where=f"activity {activity.name!r} sink")
        check_activity_options(activity.options, activity=activity.name)
    gateway = get_gateway(session, pipeline.gateway)
    wanted = {a.source.store for a in pipeline.activities} | {a.sink.store for a in pipeline.activities}
    known = stores_by_name(session, wanted)
    for activity in pipeline.activities:
        for side, endpoint in (("source", activity.source), ("sink", activity.sink)):
            if endpoint.store not in known:
                raise NotFound(f"store {endpoint.store!r} (activity {activity.name!r} {side}) does not exist",
                               hint="add it with `dmg store add` first")
    if session.scalar(select(Pipeline.id).where(Pipeline.name == pipeline.name)) is not None:
        raise Conflict(f"pipeline {pipeline.name!r} already exists", hint="pick another name")
    row = Pipeline(name=pipeline.name, gateway_id=gateway.id, gateway=gateway, created_at=now,
                   activities=[a.model_dump() for a in pipeline.activities])
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"pipeline {pipeline.name!r} already exists", hint="pick another name") from None
    body = pipeline_json(row)
    body["warnings"] = localpaths.warnings_for([known[n] for n in sorted(known)], gateway=gateway.name,
                                               nodes=len(gateway.nodes))
    return body


def list_pipelines(session: Session) -> list[dict[str, Any]]:
    return [pipeline_json(p) for p in session.scalars(select(Pipeline).order_by(Pipeline.name))]


class Created(NamedTuple):
    """A run queued by :func:`create_run`, with what its creation read that a claim in the
    same transaction reads too (:class:`dmg.cloud.service.dispatch.ReadAlready`)."""

    gateway_id: int
    run: dict[str, Any]  # as :func:`run_json` shows it
    pipeline: str  # the pipeline's name
    stores: dict[str, Any]  # its stores' rows by name (:func:`.stores.store_rows`); {} when not read


def start_run(session: Session, pipeline_name: str, *, now: float) -> tuple[int, dict[str, Any]]:
    """Queue a run of a pipeline; -> (gateway id, the run as :func:`run_json` shows it)."""
    created = create_run(session, pipeline_name, now=now)
    return created.gateway_id, created.run


def create_run(session: Session, pipeline_name: str, *, now: float) -> Created:
    """Queue a run of a pipeline (:func:`start_run`); -> the run and what was read for it."""
    # One Core row (the pipeline's columns, its gateway's name, the gateway's node count), not a
    # Pipeline and a Gateway object and a second statement for the count: the run's creation
    # is on the submit -> start path (a waiting dispatcher's claim follows in this transaction).
    row = session.connection().execute(_PIPELINE_ROW, {"name": pipeline_name}).first()
    if row is None:
        raise NotFound(f"pipeline {pipeline_name!r} does not exist",
                       hint="list pipelines with `dmg pipeline list`")
    gateway = SimpleNamespace(name=row.gateway_name)
    pipeline = SimpleNamespace(id=row.id, name=row.name, gateway_id=row.gateway_id, activities=row.activities,
                               gateway=gateway)
    problem = stored_definition_problem(pipeline.activities)
    if problem:
        raise BadInput(f"pipeline {pipeline_name!r} cannot run: {problem}",
                       hint="create the pipeline again under a new name")
    # Rows inserted with Core statements (one INSERT, one executemany): the ORM's unit of work
    # for a Run and its ActivityRun objects was more than half of the run's creation's CPU.
    run_id = uuid.uuid4().hex
    run = {"id": run_id, "pipeline_id": pipeline.id, "gateway_id": pipeline.gateway_id, "status": QUEUED,
           "created_at": now, "started_at": None, "ended_at": None}
    activity_runs = [{"id": uuid.uuid4().hex, "run_id": run_id, "gateway_id": pipeline.gateway_id,
                      "position": position, "name": spec["name"], "spec": dict(spec), "status": QUEUED,
                      "error": "", "failed_by_dispatcher": False, "planned": False, "claim_epoch": None,
                      "claimed_by": "", "queued_at": now, "claimed_at": None, "started_at": None,
                      "ended_at": None, "cancelled_at": None}
                     for position, spec in enumerate(pipeline.activities)]
    counters.activities_added(run, activity_runs)
    connection = session.connection()
    connection.execute(_INSERT_RUN, run)
    if activity_runs:
        connection.execute(_INSERT_ACTIVITY_RUNS, activity_runs)
    body = run_json(SimpleNamespace(**run, pipeline=pipeline, gateway=pipeline.gateway),  # type: ignore[arg-type]
                    activity_runs=[activity_run_json(SimpleNamespace(**a), shards=True, parts=[])
                                   for a in activity_runs])
    # The node count, not the Node objects; the stores only where a warning can follow
    # (several nodes): the run is claimable only once this transaction commits.
    nodes = row.nodes or 0
    stores = {}
    if nodes > 1:
        stores = store_rows(session, {str(a[side]["store"]) for a in pipeline.activities
                                      for side in ("source", "sink")})
    body["warnings"] = localpaths.warnings_for([stores[n] for n in sorted(stores)],
                                               gateway=pipeline.gateway.name, nodes=nodes)
    return Created(pipeline.gateway_id, body, pipeline.name, stores)


#: Built once (a run's creation is on the submit -> start path); the gateway in the same
#: statement, not a lazy load after it.
_PIPELINE_ROW = (select(Pipeline.id, Pipeline.name, Pipeline.gateway_id, Pipeline.activities,
                        Gateway.name.label("gateway_name"),
                        select(func.count()).select_from(Node).where(Node.gateway_id == Pipeline.gateway_id)
                        .scalar_subquery().label("nodes"))
                 .join(Gateway, Gateway.id == Pipeline.gateway_id).where(Pipeline.name == bindparam("name")))
_INSERT_RUN = insert(cast(Table, Run.__table__))
_INSERT_ACTIVITY_RUNS = insert(cast(Table, ActivityRun.__table__))


def _runs_query() -> Any:
    return select(Run).options(
        selectinload(Run.activity_runs).selectinload(ActivityRun.shards),
        # The pipeline's name, not its definition (a JSON list of every activity).
        selectinload(Run.pipeline).load_only(Pipeline.id, Pipeline.name, Pipeline.gateway_id)
        .selectinload(Pipeline.gateway))


def list_runs(session: Session, *, limit: int, shards: bool = False) -> list[dict[str, Any]]:
    """The latest runs first (activity runs without their shards unless ``shards``)."""
    runs = session.scalars(_runs_query().order_by(Run.created_at.desc()).limit(limit)).all()
    return [run_json(r, shards=shards) for r in runs]


def get_run(session: Session, run_id: str) -> dict[str, Any]:
    """The run with every activity run and shard (:func:`.views.run_json`). Its activity runs
    and shards are read as plain rows: loading them as ORM objects cost several times more
    (``dmg pipeline run --wait`` and the benches read a run often)."""
    run = session.scalar(select(Run).where(Run.id == run_id).options(
        selectinload(Run.pipeline).load_only(Pipeline.id, Pipeline.name, Pipeline.gateway_id)))
    if run is None:
        raise NotFound(f"run {run_id!r} does not exist", hint="list runs with `dmg runs list`")
    activities = session.execute(select(ActivityRun.__table__).where(ActivityRun.run_id == run_id)
                                 .order_by(ActivityRun.position)).all()
    shards: dict[str, list[SimpleNamespace]] = {}
    for row in session.execute(select(Shard.__table__).where(Shard.activity_run_id.in_(
            select(ActivityRun.id).where(ActivityRun.run_id == run_id))).order_by(Shard.index)):
        # A namespace, not the row: a row's ``index`` is the tuple method, not the column.
        shards.setdefault(row.activity_run_id, []).append(SimpleNamespace(**row._mapping))
    return run_json(run, activity_runs=[activity_run_json(a, parts=shards.get(a.id, [])) for a in activities])

